"""FAISS index construction: one trained template, shards filled in parallel (pure functions).

The faiss "distributed on-disk" recipe: the coarse quantizer (and the PQ codebooks) are
trained once on a sample and serialised; every shard deserialises that empty trained index,
adds its own vectors and is written to its own file. Flat and HNSW need no training: the
template is just an empty index of the right kind. Vectors are L2-normalised, the metric is
inner product, so scores are cosine similarities.

Global ids are positions: shard ``s`` holds ids ``[id_start_s, id_end_s)`` and FAISS's local
label ``j`` in it is the global id ``id_start_s + j`` (kept in the manifest).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np

log = logging.getLogger("ipl.index")

INNER_PRODUCT = "inner_product"


def default_nlist(n: int) -> int:
    """About 4*sqrt(n) lists, with at least 39 training points per list, at least 1."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39))


def factory_string(kind: str, dim: int, n: int, nlist: Optional[int] = None, pq_m: int = 16, pq_bits: int = 8,
                   hnsw_m: int = 32) -> str:
    """The ``faiss.index_factory`` description of an index type (``ValueError`` names a bad setting)."""
    if kind == "Flat":
        return "Flat"
    if kind == "HNSW":
        return f"HNSW{hnsw_m}"
    lists = nlist or default_nlist(n)
    if kind == "IVF-Flat":
        return f"IVF{lists},Flat"
    if kind == "IVF-PQ":
        if dim % pq_m:
            raise ValueError(f"faiss.pq_m={pq_m} must divide the embedding dimension {dim}")
        return f"IVF{lists},PQ{pq_m}x{pq_bits}"
    raise ValueError(f"unknown index type {kind!r} (Flat, IVF-Flat, IVF-PQ, HNSW)")


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# -- FAISS on GPU ------------------------------------------------------------------------------------
# faiss-gpu-cu12 (the `gpu` extra) and faiss-cpu install the same `faiss` module; only the GPU build
# has StandardGpuResources. With it and a visible GPU, IVF training clusters on the GPU and serving
# replicas search a GPU copy of each shard; otherwise everything stays on the CPU (same results).
_GPU_RESOURCES = None


def faiss_gpus() -> int:
    """GPUs FAISS can use in this process (0 with the CPU build or no visible GPU)."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # noqa: BLE001
        return 0


def _resources():
    global _GPU_RESOURCES
    import faiss

    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def search_copy(index, use_gpu: bool = True, device: int = 0):
    """(index to search, where): a GPU copy (``index_cpu_to_gpu``) when FAISS has a GPU here and the
    type supports it (Flat, IVF-Flat, IVF-PQ; HNSW stays on the CPU), else ``index`` itself."""
    import faiss

    if not use_gpu or faiss_gpus() == 0:
        return index, "cpu"
    try:
        nprobe = getattr(_ivf(index), "nprobe", None)
        gpu = faiss.index_cpu_to_gpu(_resources(), device, index)
        if nprobe is not None and hasattr(gpu, "nprobe"):
            gpu.nprobe = nprobe  # GpuIndexIVF searches this many lists, as the CPU index did
        return gpu, f"cuda:{device}"
    except (RuntimeError, AttributeError) as exc:  # a type the GPU build does not support
        log.info("faiss: %s stays on the CPU (%s)", type(index).__name__, str(exc).splitlines()[0])
        return index, "cpu"


def train_index(index, sample: np.ndarray, use_gpu: bool = True) -> str:
    """``index.train(sample)``; for an IVF index with a GPU here, the k-means of the coarse quantizer
    runs on all GPUs (FAISS's own recipe: a GPU flat index as the clustering index). Returns where."""
    import faiss

    ivf = _ivf(index)
    if use_gpu and ivf is not None and faiss_gpus() > 0:
        flat = faiss.IndexFlatIP(ivf.d) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(ivf.d)
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(flat)
        index.train(sample)  # the clustering index is a training aid: not serialised with the index
        return "cuda"
    index.train(sample)
    return "cpu"


def trained_template(spec: str, dim: int, sample: np.ndarray, ef_construction: int = 80,
                     use_gpu: bool = True) -> np.ndarray:
    """An empty index of ``spec``, trained on ``sample`` if it needs training, serialised."""
    import faiss

    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = ef_construction
    if not index.is_trained:
        sample = normalize(sample)
        if len(sample) < _min_train(spec):
            raise ValueError(f"index {spec!r} needs at least {_min_train(spec)} training vectors, have {len(sample)}: "
                             "lower faiss.nlist / faiss.pq_bits or use faiss.type=Flat")
        where = train_index(index, sample, use_gpu)
        log.info("faiss: %s trained on %d vectors (%s)", spec, len(sample), where)
    return faiss.serialize_index(index)


def _min_train(spec: str) -> int:
    lists = int(spec.split(",")[0][3:]) if spec.startswith("IVF") else 1
    need = lists
    if ",PQ" in spec:
        bits = int(spec.rsplit("x", 1)[1])
        need = max(need, 2 ** bits)
    return need


def fill_shard(template: np.ndarray, vectors: np.ndarray, threads: int = 1):
    """Deserialise the trained template and add ``vectors`` (normalised); returns the faiss index."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    index = faiss.deserialize_index(template)
    if vectors.shape[1] != index.d:
        raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {index.d}")
    index.add(normalize(vectors))
    return index


def set_search_params(index, nprobe: int, ef_search: int) -> None:
    import faiss

    ps = faiss.ParameterSpace()
    if _ivf(index) is not None:
        ps.set_index_parameter(index, "nprobe", nprobe)
    if hasattr(index, "hnsw"):
        ps.set_index_parameter(index, "efSearch", ef_search)


def _ivf(index):
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], offsets: list[int], k: int):
    """Merge per-shard results (``scores[s]``, local ``ids[s]`` of shape (nq, k_s)) into global top-k.

    FAISS pads missing results with id -1; those are dropped (score -inf). Ties keep shard order.
    Returns (scores, global_ids) of shape (nq, k), padded with (-inf, -1).
    """
    nq = scores[0].shape[0] if scores else 0
    all_s = np.concatenate([s.astype(np.float32) for s in scores], axis=1) if scores else np.zeros((nq, 0), np.float32)
    all_i = np.concatenate([np.where(i >= 0, i + off, -1) for i, off in zip(ids, offsets)], axis=1) if ids else \
        np.zeros((nq, 0), np.int64)
    all_s = np.where(all_i >= 0, all_s, -np.inf)
    order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(all_s, order, axis=1)
    top_i = np.take_along_axis(all_i, order, axis=1)
    if top_s.shape[1] < k:
        pad = k - top_s.shape[1]
        top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_i = np.pad(top_i, ((0, 0), (0, pad)), constant_values=-1)
    return top_s, top_i
