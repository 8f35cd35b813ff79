"""Atomic publish, rollback, pruning, and refusal of corrupted/truncated/mismatched versions."""
import json

import numpy as np
import pytest

from conftest import DIM, publish_version  # noqa: E402  (tests/unit/index/conftest.py)
from ipl.index.manifest import IndexIntegrityError, current_version, prune, rollback, versions
from ipl.index.search import IndexHolder, ShardedIndex


def test_publish_switches_current_and_rollback_returns(tmp_path, data):
    vectors, skus = data
    root = tmp_path / "index"
    v1 = publish_version(root, vectors, skus, tmp=tmp_path)
    assert current_version(root) == "v0001" and v1.name == "v0001"
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["previous"] is None and set(manifest["files"]) == {
        "shard-000.faiss", "shard-000.parquet", "shard-001.faiss", "shard-001.parquet"}
    publish_version(root, vectors[:100], skus[:100], tmp=tmp_path)
    assert current_version(root) == "v0002"
    assert ShardedIndex.load(root).ntotal == 100
    assert rollback(root) == "v0001"
    assert ShardedIndex.load(root).ntotal == 200
    assert not list(root.glob(".tmp-*")) and not list(root.glob(".current*"))


def test_rollback_without_previous_is_refused(tmp_path, data):
    root = tmp_path / "index"
    with pytest.raises(IndexIntegrityError, match="no current"):
        rollback(root)
    publish_version(root, *data, tmp=tmp_path)
    with pytest.raises(IndexIntegrityError, match="no previous"):
        rollback(root)


def test_prune_keeps_current_and_previous(tmp_path, data):
    root = tmp_path / "index"
    for _ in range(4):
        publish_version(root, *data, tmp=tmp_path)  # keep=3
    assert versions(root) == ["v0002", "v0003", "v0004"]
    assert prune(root, 2) == ["v0002"]
    assert versions(root) == ["v0003", "v0004"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_shard_is_refused_and_old_version_keeps_serving(tmp_path, data, damage):
    vectors, skus = data
    root = tmp_path / "index"
    publish_version(root, vectors, skus, tmp=tmp_path)
    holder = IndexHolder(root, dim=DIM, fingerprint="enc-A")
    assert holder.refresh() and holder.index.version == "v0001"
    v2 = publish_version(root, vectors[:120], skus[:120], tmp=tmp_path)
    shard = v2 / "shard-001.faiss"
    raw = shard.read_bytes()
    if damage == "flip":
        shard.write_bytes(raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:])
    elif damage == "truncate":
        shard.write_bytes(raw[: len(raw) // 2])
    else:
        shard.unlink()
    with pytest.raises(IndexIntegrityError, match={"flip": "sha256 mismatch", "truncate": "truncated",
                                                   "delete": "missing"}[damage]):
        ShardedIndex.load(root)
    assert holder.refresh() is False
    assert holder.index.version == "v0001" and "shard-001.faiss" in holder.last_error
    hits = holder.index.search(vectors[:1], 1)[0]
    assert hits[0]["listing_id"] == "L00000"


def test_wrong_dimension_and_encoder_are_refused(tmp_path, data):
    root = tmp_path / "index"
    publish_version(root, *data, tmp=tmp_path)
    with pytest.raises(IndexIntegrityError, match=f"dimension {DIM}, the encoder 32"):
        ShardedIndex.load(root, dim=32)
    with pytest.raises(IndexIntegrityError, match="encoder enc-A, the loaded encoder is enc-B"):
        ShardedIndex.load(root, fingerprint="enc-B")
    holder = IndexHolder(root, dim=32)
    assert holder.refresh() is False and holder.index is None


def test_shard_of_another_dimension_behind_a_valid_checksum_is_refused(tmp_path, data):
    """A manifest re-signed over a shard of the wrong dimension still fails the faiss-level check."""
    from ipl.index.faiss_index import fill_shard, trained_template
    from ipl.runtime import sha256_file, write_json_atomic
    import faiss

    vectors, skus = data
    root = tmp_path / "index"
    v1 = publish_version(root, vectors, skus, tmp=tmp_path)
    other = fill_shard(trained_template("Flat", 8, np.zeros((1, 8), np.float32)), np.ones((100, 8), np.float32))
    faiss.write_index(other, str(v1 / "shard-000.faiss"))
    manifest = json.loads((v1 / "manifest.json").read_text())
    path = v1 / "shard-000.faiss"
    manifest["files"]["shard-000.faiss"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    write_json_atomic(v1 / "manifest.json", manifest)
    with pytest.raises(IndexIntegrityError, match="dimension 8"):
        ShardedIndex.load(root)


def test_swaps_under_concurrent_searches_never_touch_a_closed_pool(tmp_path, data):
    """Searches through leases while a background thread swaps versions (publish and rollback):
    no search fails, and every swapped-out version is closed once its last search ended."""
    import threading

    vectors, skus = data
    root = tmp_path / "index"
    publish_version(root, vectors, skus, tmp=tmp_path)
    holder = IndexHolder(root, dim=DIM, fingerprint="enc-A")
    assert holder.refresh()
    closed, errors, seen = [], [], set()
    original_close = ShardedIndex.close

    def close(self):
        closed.append(self)
        original_close(self)

    ShardedIndex.close = close
    try:
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    with holder.lease() as index:
                        hits = index.search(vectors[:2], 3)
                        assert index not in closed, "searched a closed version"
                        seen.add(index.version)
                        assert hits[0][0]["listing_id"] == "L00000"
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        holder.start(0.005)  # the background refresh picks up each switch of `current`
        for i in range(6):
            if i % 2:
                rollback(root)
            else:
                publish_version(root, vectors, skus, tmp=tmp_path)
            deadline = __import__("time").monotonic() + 10
            while holder.index.version != current_version(root) and __import__("time").monotonic() < deadline:
                stop.wait(0.01)
            assert holder.index.version == current_version(root)
        stop.set()
        for t in threads:
            t.join()
        holder.stop()
    finally:
        ShardedIndex.close = original_close
    assert errors == []
    assert len(seen) >= 2 and holder.refreshes["swaps"] >= 7
    assert holder.index not in closed and len(closed) == holder.refreshes["swaps"] - 1  # every old one, once
