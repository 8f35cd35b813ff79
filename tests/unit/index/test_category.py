"""Category head accuracy on a held-out split, save/load, zero-shot fallback, encoder mismatch."""
import numpy as np
import pytest
import torch

from ipl.index.category import CategoryPredictor, load_head, save_head, train_head
from ipl.index.faiss_index import normalize


class FakeClip:
    """Only what the predictor touches: fingerprint, a text tower and logit_scale (the real
    open_clip text tower is exercised in test_category_zero_shot_with_real_clip)."""

    def __init__(self, fingerprint="enc-A", text=None):
        self.fingerprint = fingerprint
        self._text = text
        self.model = type("M", (), {"logit_scale": torch.tensor(np.log(50.0))})()
        self.logit_scale = 50.0  # what Clip.logit_scale reads from the model above

    def encode_texts(self, prompts):
        return torch.from_numpy(np.stack([self._text[p] for p in prompts]))


def blobs(n, classes, d, seed, spread=0.6):
    rng = np.random.default_rng(seed)
    centers = normalize(rng.normal(size=(len(classes), d)).astype(np.float32))
    y = rng.integers(0, len(classes), n)
    return normalize(centers[y] + spread * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)), \
        [classes[i] for i in y], centers


def test_head_accuracy_on_held_out_split():
    classes = ["phone", "laptop", "camera", "watch", "jacket"]
    x, y, centers = blobs(1200, classes, 32, 0, spread=2.0)
    head = train_head(x[:1000], y[:1000], epochs=40)
    pred = CategoryPredictor(FakeClip(), {**head, "encoder": "enc-A"})
    top = [p[0]["category"] for p in pred.predict(x[1000:], 1)]
    acc = np.mean([a == b for a, b in zip(top, y[1000:])])
    oracle = np.mean([classes[i] == t for i, t in zip(np.argmax(x[1000:] @ centers.T, 1), y[1000:])])
    assert acc >= 0.9 and acc >= oracle - 0.03, (acc, oracle)  # as good as knowing the true centres
    chance = 1 / len(classes)
    assert head["train_accuracy"] > chance * 3


def test_predict_returns_top_k_sorted_probabilities(tmp_path):
    x, y, _ = blobs(300, ["a", "b", "c", "d"], 16, 1)
    save_head(train_head(x, y, epochs=20), tmp_path / "cat", "enc-A")
    pred = CategoryPredictor.load(FakeClip(), tmp_path / "cat")
    assert pred.source == "head" and pred.categories == ["a", "b", "c", "d"]
    out = pred.predict(x[:5], 3)
    assert all(len(r) == 3 for r in out)
    for r in out:
        assert r[0]["score"] >= r[1]["score"] >= r[2]["score"]
    assert np.allclose(pred.probabilities(x[:5]).sum(1), 1)


def test_head_of_another_encoder_falls_back_to_zero_shot(tmp_path):
    x, y, centers = blobs(300, ["a", "b"], 16, 2)
    save_head(train_head(x, y, epochs=5), tmp_path / "cat", "enc-OLD")
    text = {"a photo of a": centers[0], "a photo of b": centers[1]}
    pred = CategoryPredictor.load(FakeClip("enc-NEW", text), tmp_path / "cat")
    assert pred.source == "zero_shot"
    top = [p[0]["category"] for p in pred.predict(x, 1)]
    assert np.mean([a == b for a, b in zip(top, y)]) > 0.9


def test_no_head_and_no_names_is_an_error(tmp_path):
    assert load_head(tmp_path / "none") is None
    with pytest.raises(ValueError, match="no trained head and no category names"):
        CategoryPredictor.load(FakeClip(), tmp_path / "none")


def test_train_head_input_errors():
    with pytest.raises(ValueError, match="at least 2 categories"):
        train_head(np.ones((3, 4), np.float32), ["a", "a", "a"])
    with pytest.raises(ValueError, match="3 vectors and 2 labels"):
        train_head(np.ones((3, 4), np.float32), ["a", "b"])


def test_category_zero_shot_with_real_clip(tiny_clip):
    pred = CategoryPredictor(tiny_clip, None, ["phone", "laptop"])
    img = tiny_clip.encode_images([__import__("PIL.Image", fromlist=["Image"]).new("RGB", (64, 64), "red")]).numpy()
    out = pred.predict(img, 2)[0]
    assert {o["category"] for o in out} == {"phone", "laptop"} and abs(sum(o["score"] for o in out) - 1) < 1e-5


def test_crossfit_categories_never_saw_the_querys_sku():
    """The calibration's category predictions come from heads fitted without the query's SKU: a
    category made of one SKU only cannot be named for that SKU's photos (the head fitted on everything
    names it), while categories with other SKUs still are, with the scores of a head that did not
    learn the SKU."""
    from ipl.index.category import crossfit_categories, sku_groups, softmax

    rng = np.random.default_rng(0)
    d = 16
    sku_centres = {}
    for cat, skus in {"phone": ["p1", "p2", "p3"], "watch": ["w1", "w2", "w3"], "drone": ["d1"]}.items():
        base = rng.normal(size=d)
        for s in skus:
            sku_centres[(cat, s)] = base + 0.4 * rng.normal(size=d)
    vecs, labels, skus = [], [], []
    for (cat, s), c in sku_centres.items():
        for _ in range(30):
            vecs.append(c + 0.1 * rng.normal(size=d))
            labels.append(cat)
            skus.append(s)
    vecs = normalize(np.array(vecs, np.float32))
    queries = normalize(np.array([sku_centres[("drone", "d1")], sku_centres[("phone", "p2")],
                                  sku_centres[("watch", "w3")]], np.float32))
    query_skus = ["d1", "p2", "w3"]
    full = train_head(vecs, labels, 80, 5e-2, 1e-4)
    assert [full["classes"][int(p.argmax())] for p in softmax(queries @ full["weight"].T + full["bias"])] == \
        ["drone", "phone", "watch"]
    crossed = crossfit_categories(vecs, labels, skus, queries, query_skus, 80, 5e-2, 1e-4)
    assert [c for c, _ in crossed][1:] == ["phone", "watch"] and crossed[0][0] != "drone"
    assert all(0 < score <= 1 for _, score in crossed)
    assert sku_groups(query_skus, 2) == {"d1": 0, "p2": 1, "w3": 0}
