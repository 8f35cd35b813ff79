"""Pure pieces of the index stage: held-out choice, shard plan, threshold calibration, the embedder,
the config."""
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from ipl.config import ConfigError, load_config
from ipl.index.config import IndexConfig
from ipl.index.embed import ListingEmbedder, arrow_to_vectors
from ipl.index.stage import choose_holdout, plan_shards, untrained_listings


def test_holdout_keeps_every_sku_in_the_index_and_is_stable():
    ids = [f"L{i}" for i in range(400)]
    skus = [f"s{i % 50}" for i in range(200)] + [f"single{i}" for i in range(200)]
    out = choose_holdout(ids, skus, 0.3, seed=0)
    assert out == choose_holdout(list(reversed(ids)), list(reversed(skus)), 0.3, seed=0)
    sku_of = dict(zip(ids, skus))
    held = {sku_of[i] for i in out}
    assert not any(s.startswith("single") for s in held)  # singletons are never held out
    for s in held:
        assert sum(1 for i in ids if sku_of[i] == s and i not in set(out)) >= 1
    assert 0.15 < len(out) / 200 < 0.45
    assert choose_holdout(ids, skus, 0.0, 0) == []
    assert choose_holdout(ids, skus, 0.3, seed=1) != out
    # all listings of a SKU picked: one goes back
    assert choose_holdout(["a", "b"], ["s", "s"], 0.9999, 0) in (["a"], ["b"], [])


def test_plan_shards_balances_and_splits_files():
    assert plan_shards([10, 10, 10, 10], 2) == [[(0, 0, 10), (1, 0, 10)], [(2, 0, 10), (3, 0, 10)]]
    one = plan_shards([9], 3)  # a single file is split by rows
    assert one == [[(0, 0, 3)], [(0, 3, 6)], [(0, 6, 9)]]
    uneven = plan_shards([5, 0, 30, 5], 4)
    sizes = [sum(b - a for _, a, b in g) for g in uneven]
    assert sizes == [10, 10, 10, 10]
    covered = sorted((f, r) for g in uneven for f, a, b in g for r in range(a, b))
    assert covered == [(0, r) for r in range(5)] + [(2, r) for r in range(30)] + [(3, r) for r in range(5)]
    assert plan_shards([2], 5) == [[(0, 0, 1)], [(0, 1, 2)]]


def jpeg(color):
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, format="JPEG")
    return buf.getvalue()


def test_embedder_means_photos_and_reports_errors(tiny_clip, tmp_path):
    emb = ListingEmbedder(tiny_clip.source, photos_per_listing=2)
    batch = pa.table({"listing_id": ["a", "b", "c", "d"],
                      "photos": [[jpeg("red"), jpeg("blue"), jpeg("green")], [jpeg("red")], [], [b"not a jpeg"]]})
    out = emb(batch)
    assert "photos" not in out.column_names
    v = arrow_to_vectors(out.column("embedding"))
    assert v.shape == (4, tiny_clip.dim)
    np.testing.assert_allclose(np.linalg.norm(v[:2], axis=1), 1, atol=1e-5)
    red, blue = tiny_clip.encode_images([Image.open(io.BytesIO(jpeg(c))) for c in ("red", "blue")]).numpy()
    mean = (red + blue) / np.linalg.norm(red + blue)
    np.testing.assert_allclose(v[0], mean, atol=1e-5)
    np.testing.assert_allclose(v[1], red, atol=1e-5)
    errors = out.column("embed_error").to_pylist()
    assert errors[:2] == [None, None] and errors[2] == "no photos" and errors[3].startswith("unreadable photo")


def test_index_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("faiss: {type: IVF-PQ, pq_bits: 12, pq_m: 128}\n")
    with pytest.raises(ConfigError, match="pq_bits > 8"):
        load_config(IndexConfig, p)
    p.write_text("faiss: {type: LSH}\n")
    with pytest.raises(ConfigError, match="faiss.type"):
        load_config(IndexConfig, p)
    p.write_text("keep_versions: 1\n")
    with pytest.raises(ConfigError, match="keep_versions"):
        load_config(IndexConfig, p)
    cfg = load_config(IndexConfig, None, ["run.name=x"])
    assert str(cfg.index_root) == "runs/x/index" and cfg.base_clip == "runs/x/models/clip-base"
    assert cfg.encoder_key() != load_config(IndexConfig, None, ["run.name=x", "encoder.steps=3"]).encoder_key()


def test_untrained_listings_are_the_evaluation_splits_skus(tmp_path):
    import pyarrow.parquet as pq

    ids, skus = ["a", "b", "c", "d"], ["s1", "s2", "s1", "s3"]
    cfg = load_config(IndexConfig, None, [f"run.root={tmp_path}", "run.name=r"])
    assert untrained_listings(cfg, ids, skus) == []  # no instruction data: nothing kept out
    folder = tmp_path / "r" / "instructions" / "split=validation"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"group": ["s1", "s1", "s9"]}), folder / "part-0.parquet")
    assert untrained_listings(cfg, ids, skus) == ["a", "c"]
    off = load_config(IndexConfig, None, [f"run.root={tmp_path}", "run.name=r", "eval.untrained_split=null"])
    assert untrained_listings(off, ids, skus) == []
    # the encoder trained without them is another encoder
    assert cfg.encoder_key(["a", "c"]) != cfg.encoder_key() and cfg.encoder_key(["c", "a"]) == cfg.encoder_key(["a", "c"])


def test_report_says_which_evidence_tiers_are_disabled():
    from ipl.index.report import report

    tiers = {"identical": {"enabled": False, "reason": "no score reaches precision 0.95 with 20+ of 40 held-out "
                           "top-1 hits (best 0.50 on 4)", "n": 40},
             "category": {"enabled": True, "threshold": 0.61, "precision": 0.97, "coverage": 0.9, "n": 40},
             "similar:sku": {"enabled": False, "policy": "never stated"}}
    s = {"version": "v0003", "ntotal": 10, "dimension": 8, "index_type": "HNSW", "factory": "HNSW32",
         "shards": [{}, {}], "target_precision": 0.95,
         "eval": {"queries": 4, "identical_top1": 0.25, "identical_top5": 0.5, "similar_top1": 0.5,
                  "category_top1": 0.75, "category_top1_zero_shot": 0.25},
         "thresholds": {"identical": None, "calibrated": True},
         "evidence": {"queries": 40, "target_precision": 0.95, "tiers": tiers,
                      "in_domain": {"min_similarity": 0.42, "quantile": 0.01}, "disabled": ["identical"]}}
    text = report(s)
    assert "index v0003: 10 vectors, dim 8, HNSW (HNSW32) in 2 shards" in text
    assert "identical-product tier DISABLED: no hit is marked identical" in text
    assert "identical         DISABLED: no score reaches precision 0.95" in text
    assert "category          threshold 0.610: precision 0.97 on 90% of 40" in text
    assert "similar:sku       off by policy" in text and "in-domain floor" in text
    s["thresholds"] = {"identical": 0.8, "calibrated": False}
    assert "identical-product threshold 0.800 (configured)" in report(s)
