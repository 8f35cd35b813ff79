"""The product heads: one classifier per category and product-level key on the listing vectors,
cross-fitted predictions that never saw the query's SKU, and a round trip through the version
directory."""
import json

import numpy as np
import pytest

from ipl.catalog.levels import KeyLevels
from ipl.index.calibration import product_keys
from ipl.index.product import ProductPredictor, crossfit_predictions, save_product_heads, train_heads

DIM = 24


def catalogue(rng, per_sku=6):
    """Two categories; a model's listings sit near the model's direction, each colour (SKU) a little
    apart. ``phone/acme/x2`` has a single SKU (one colour)."""
    models = {("phone", "Acme", "X1"): ["red", "blue"], ("phone", "Acme", "X2"): ["red"],
              ("phone", "Bolt", "B9"): ["red", "green"], ("camera", "Kappa", "K5"): ["black", "silver"],
              ("camera", "Lumo", "L7"): ["black"]}
    vecs, meta = [], {"category": [], "extracted": [], "sku_id": []}
    for m, (cat, brand, model) in enumerate(models):
        centre = np.eye(DIM)[m] * 3
        for c, colour in enumerate(models[(cat, brand, model)]):
            sku_shift = np.eye(DIM)[10 + c]
            for _ in range(per_sku):
                vecs.append(centre + sku_shift + rng.normal(0, 0.3, DIM))
                meta["category"].append(cat)
                meta["extracted"].append(json.dumps({"Brand": brand, "Model": model, "Color": colour}))
                meta["sku_id"].append(f"{cat}/{brand}/{model}/{colour}".lower())
    v = np.asarray(vecs, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True), meta


def test_one_head_per_category_and_product_key_and_they_recognise_the_product():
    rng = np.random.default_rng(0)
    vecs, meta = catalogue(rng)
    keys = product_keys(meta["extracted"], KeyLevels())
    assert keys == ["Brand", "Model"]  # Color is SKU-level: the colour head's
    heads = train_heads(vecs, meta["category"], meta["extracted"], keys, 80, 5e-2, 1e-4, min_listings=5)
    assert sorted((h["category"], h["key"]) for h in heads) == [
        ("camera", "Brand"), ("camera", "Model"), ("phone", "Brand"), ("phone", "Model")]
    pred = ProductPredictor(heads)
    got = pred.predict(vecs[0], "phone", 3)
    assert got["Model"][0]["value"] == "X1" and got["Brand"][0]["value"] == "Acme"
    assert got["Model"][0]["score"] >= got["Model"][1]["score"] and sum(c["score"] for c in got["Model"]) <= 1.0001
    assert pred.predict(vecs[0], "laptop") == {} and pred.predict(vecs[0], None) == {}
    few = train_heads(vecs, meta["category"], meta["extracted"], keys, 10, 5e-2, 1e-4, min_listings=1000)
    assert few == []  # no category has that many labelled listings


def test_crossfit_predictions_never_saw_the_querys_sku():
    """A held-out listing of the only SKU of X2 cannot be called X2 by a head that never saw that
    SKU, however easily the head fitted on everything recognises it; listings of a model with
    another SKU (another colour) still are."""
    rng = np.random.default_rng(1)
    vecs, meta = catalogue(rng)
    queries, query_meta = catalogue(np.random.default_rng(2), per_sku=1)
    keys = ["Model"]
    full = ProductPredictor(train_heads(vecs, meta["category"], meta["extracted"], keys, 80, 5e-2, 1e-4,
                                        min_listings=5))
    crossed = crossfit_predictions(vecs, meta, queries, query_meta["sku_id"], query_meta["category"], keys, 80,
                                   5e-2, 1e-4, min_listings=5)
    assert len(crossed) == len(queries)
    truth = [json.loads(e)["Model"] for e in query_meta["extracted"]]
    x2 = [i for i, s in enumerate(query_meta["sku_id"]) if s == "phone/acme/x2/red"]
    assert full.predict(queries[x2[0]], "phone")["Model"][0]["value"] == "X2"
    assert all(crossed[i]["Model"][0]["value"] != "X2" for i in x2)
    two_colours = [i for i, s in enumerate(query_meta["sku_id"]) if s.startswith(("phone/acme/x1", "phone/bolt/b9"))]
    assert sum(crossed[i]["Model"][0]["value"] == truth[i] for i in two_colours) >= len(two_colours) - 1


def test_heads_round_trip_through_the_version_directory(tmp_path):
    rng = np.random.default_rng(3)
    vecs, meta = catalogue(rng)
    heads = train_heads(vecs, meta["category"], meta["extracted"], ["Brand", "Model"], 40, 5e-2, 1e-4,
                        min_listings=5)
    save_product_heads(heads, tmp_path, "enc-1")
    loaded = ProductPredictor.load(tmp_path, "enc-1")
    assert loaded.summary() == {"heads": 4, "keys": ["Brand", "Model"], "trained": {"Brand": len(vecs),
                                                                                    "Model": len(vecs)}}
    assert loaded.predict(vecs[5], "camera", 2) == ProductPredictor(heads).predict(vecs[5], "camera", 2)
    assert ProductPredictor.load(tmp_path, "another-encoder") is None  # fitted on other vectors: not used
    assert ProductPredictor.load(tmp_path / "none") is None
    with pytest.raises(ValueError, match="expects 24-d vectors"):
        loaded.predict(np.ones(8, np.float32), "phone")
