"""Sharded IVF recall against exact search, top-k merge across shards, factory settings."""
import numpy as np
import pytest

from ipl.index.faiss_index import (default_nlist, factory_string, fill_shard, merge_topk, normalize,
                                   set_search_params, trained_template)


def clustered(n, d, clusters, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return normalize(x.astype(np.float32))


def sharded_search(template, x, shards, q, k, nprobe=8, ef=64):
    bounds = np.linspace(0, len(x), shards + 1).astype(int)
    scores, ids, offsets = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        ix = fill_shard(template, x[a:b])
        set_search_params(ix, nprobe, ef)
        s, i = ix.search(q, k)
        scores.append(s), ids.append(i), offsets.append(int(a))
    return merge_topk(scores, ids, offsets, k)


@pytest.mark.parametrize("kind", ["IVF-Flat", "IVF-PQ", "HNSW"])
def test_sharded_recall_at_1_against_exact(kind):
    d, n = 32, 20_000
    x = clustered(n, d, 64, 0)
    rng = np.random.default_rng(1)
    q = normalize(x[rng.choice(n, 300, replace=False)] + 0.05 * rng.normal(size=(300, d)).astype(np.float32))
    exact = np.argmax(q @ x.T, axis=1)
    spec = factory_string(kind, d, n, pq_m=16, pq_bits=6, hnsw_m=16)
    template = trained_template(spec, d, x[rng.choice(n, 5_000, replace=False)])
    _, ids = sharded_search(template, x, 4, q, 10, nprobe=16, ef=128)
    recall = float(np.mean(ids[:, 0] == exact)) if kind != "IVF-PQ" else float(
        np.mean([e in row for e, row in zip(exact, ids)]))  # PQ: exact neighbour in the top-10
    assert recall >= 0.95, (kind, recall)


def test_sharded_flat_equals_unsharded():
    d = 16
    x = clustered(3000, d, 10, 2)
    q = x[:50] + 0.01
    template = trained_template("Flat", d, x[:10])
    s1, i1 = sharded_search(template, x, 1, normalize(q), 7)
    s3, i3 = sharded_search(template, x, 3, normalize(q), 7)
    assert (i1 == i3).all()
    np.testing.assert_allclose(s1, s3, rtol=1e-5)


def test_merge_topk_offsets_order_and_padding():
    s = [np.array([[0.9, 0.1]], np.float32), np.array([[0.95, 0.5]], np.float32), np.array([[0.3, -1]], np.float32)]
    i = [np.array([[0, 1]]), np.array([[4, 2]]), np.array([[0, -1]])]  # -1: faiss padding
    top_s, top_i = merge_topk(s, i, [0, 10, 20], 4)
    assert top_i.tolist() == [[14, 0, 12, 20]]
    np.testing.assert_allclose(top_s, [[0.95, 0.9, 0.5, 0.3]])
    top_s, top_i = merge_topk(s, i, [0, 10, 20], 7)
    assert top_i[0, 5:].tolist() == [-1, -1] and np.isneginf(top_s[0, 6])
    assert -1 not in top_i[0, :5]


def test_factory_strings_and_errors():
    assert factory_string("Flat", 64, 10) == "Flat"
    assert factory_string("HNSW", 64, 10, hnsw_m=16) == "HNSW16"
    assert factory_string("IVF-Flat", 64, 100_000) == f"IVF{default_nlist(100_000)},Flat"
    assert factory_string("IVF-PQ", 64, 1000, nlist=8, pq_m=16, pq_bits=4) == "IVF8,PQ16x4"
    with pytest.raises(ValueError, match="must divide"):
        factory_string("IVF-PQ", 100, 1000, pq_m=16)
    with pytest.raises(ValueError, match="unknown index type"):
        factory_string("LSH", 64, 10)
    assert default_nlist(100) == 2 and default_nlist(10) == 1


def test_too_few_training_vectors_is_a_clear_error():
    x = clustered(50, 16, 4, 3)
    with pytest.raises(ValueError, match="training vectors"):
        trained_template("IVF64,Flat", 16, x)


def test_fill_shard_refuses_wrong_dimension():
    template = trained_template("Flat", 16, np.zeros((1, 16), np.float32))
    with pytest.raises(ValueError, match="dimension 8"):
        fill_shard(template, np.ones((3, 8), np.float32))
