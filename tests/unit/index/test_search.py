"""Fan-out search over a published index: merge, metadata, identical-product threshold."""
import numpy as np

from conftest import publish_version  # noqa: E402
from ipl.index.search import ShardedIndex


def test_search_merges_shards_like_exact_search(tmp_path, data):
    vectors, skus = data
    publish_version(tmp_path / "index", vectors, skus, shards=3, tmp=tmp_path)
    index = ShardedIndex.load(tmp_path / "index")
    assert len(index.shards) == 3 and index.ntotal == 200
    q = vectors[[5, 150]] + 0.01
    scores, ids = index.search_raw(q, 10)
    exact = np.argsort(-(q / np.linalg.norm(q, axis=1, keepdims=True)) @ vectors.T, axis=1)[:, :10]
    assert (ids == exact).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_hits_carry_metadata_and_threshold(tmp_path, data):
    vectors, skus = data
    publish_version(tmp_path / "index", vectors, skus, threshold=0.95, tmp=tmp_path)
    index = ShardedIndex.load(tmp_path / "index")
    hits = index.search(vectors[7:8], 3)[0]
    first = hits[0]
    assert first["listing_id"] == "L00007" and first["sku_id"] == skus[7] and first["attributes"] == {"Brand": "B7"}
    assert first["identical"] is True and first["score"] > 0.99
    assert all(h["identical"] == (h["score"] >= 0.95) for h in hits)
    assert any(not h["identical"] for h in hits)
    # an explicit threshold overrides the calibrated one
    strict = ShardedIndex.load(tmp_path / "index", identical_threshold=1.01)
    assert not strict.search(vectors[7:8], 1)[0][0]["identical"]


def test_k_larger_than_the_index(tmp_path, data):
    vectors, skus = data
    publish_version(tmp_path / "index", vectors[:60], skus[:60], tmp=tmp_path)
    hits = ShardedIndex.load(tmp_path / "index").search(vectors[:2], 100)
    assert [len(h) for h in hits] == [60, 60]
