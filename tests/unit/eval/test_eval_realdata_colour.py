"""Real-photo colour by the index's photo-colour head: labels mapped to its catalogue colours by
the eval's synonyms, a label it cannot name counted as a miss, the calibrated tier's precision."""
import numpy as np

from ipl.eval.scoring import same_spu_colour
from ipl.eval.realdata import photo_colour
from ipl.index.colour import ColourPredictor


def head():
    weight = np.eye(3, dtype=np.float32) * 5
    return ColourPredictor({"key": "Color", "classes": ["Black", "Navy", "White"], "weight": weight,
                            "bias": np.zeros(3, np.float32)})


def test_photo_colour_maps_synonyms_and_counts_unnamed_labels_as_misses():
    feats = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    out = photo_colour({"predictor": head(), "tier": {"enabled": True, "threshold": 0.9}}, feats,
                       ["Black", "Navy Blue", "White", "Steel"], [["navy", "navy blue"]])
    assert out["top1"] == 0.75 and out["labels_named"] == 0.75
    assert out["stated"]["coverage"] == 1.0 and out["stated"]["precision"] == 0.75
    assert "stated" not in photo_colour({"predictor": head(), "tier": {"enabled": False}}, feats, ["Black"] * 4, [])


def test_same_spu_colour_needs_both_the_spu_and_the_colour():
    ex = {"spu_id": "a", "attributes": {"Color": "Navy"}}
    assert same_spu_colour({"spu_id": "a", "attributes": {"Color": "navy"}}, ex, "Color") is True
    assert same_spu_colour({"spu_id": "a", "attributes": {"Color": "Black"}}, ex, "Color") is False
    assert same_spu_colour({"spu_id": "b", "attributes": {"Color": "Navy"}}, ex, "Color") is False
    assert same_spu_colour(None, ex, "Color") is False
    assert same_spu_colour({"spu_id": "a"}, {"spu_id": "a", "attributes": {}}, "Color") is None


def test_a_hits_colour_is_its_skus_when_its_text_leaves_it_out():
    from ipl.index.calibration import sku_values

    # the SKU's colour is what most of its listings state; a listing that states none inherits it
    colours = sku_values(["s1", "s1", "s1", "s2", "s3"],
                         ['{"Color": "Navy"}', {"color": "navy "}, '{"Color": "Black"}', "{}", {"Brand": "X"}], "Color")
    assert colours == {"s1": "Navy"}
    ex = {"spu_id": "a", "attributes": {"Color": "Navy"}}
    silent = {"spu_id": "a", "sku_id": "s1", "attributes": {}}
    assert same_spu_colour(silent, ex, "Color") is False  # by the hit's text alone: no colour, a miss
    assert same_spu_colour(silent, ex, "Color", colours) is True
    # the SKU's colour outranks a listing's own stray one; a SKU with none falls back to the text
    assert same_spu_colour({**silent, "attributes": {"Color": "Black"}}, ex, "Color", colours) is True
    assert same_spu_colour({**silent, "sku_id": "s2", "attributes": {"Color": "Navy"}}, ex, "Color", colours) is True
    assert same_spu_colour({**silent, "sku_id": "s2"}, ex, "Color", colours) is False


def test_a_compared_clip_is_read_under_the_run_unless_it_exists_as_given(tmp_path, monkeypatch):
    from ipl.eval.config import EvalConfig
    from ipl.eval.realdata import compare_dir

    cfg = EvalConfig(run={"name": "r", "root": str(tmp_path)})
    assert compare_dir(cfg, "models/clip-tiny") == tmp_path / "r" / "models" / "clip-tiny"
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path)
    assert compare_dir(cfg, "here").resolve() == tmp_path / "here"  # exists as given (cwd)
    assert str(compare_dir(cfg, "/abs/clip")) == "/abs/clip"
