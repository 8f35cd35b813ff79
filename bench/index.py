"""Benchmark of the retrieval index: FAISS index types, sharded vs unsharded, against exact search.

    .venv/bin/python bench/index.py                         # 1M x 512 (~30 min, ~10 GB here)
    .venv/bin/python bench/index.py --n 100000 --json bench/results/index-100k.json
    .venv/bin/python bench/index.py --n 0 --embed-run runs/demo    # only the embedding throughput

Vectors: ``--n`` L2-normalised points of dimension ``--dim`` around 2,000 random centres
(products; ``--spread`` is a cluster's radius); queries are database points plus noise of
radius ``--query-noise`` (another photo of a listed product), so neighbours compete. Exact search
(``IndexFlatIP``, brute force) gives the ground truth and is the ``Flat`` row. For
IVF-Flat, IVF-PQ and HNSW, in one run: build time (quantizer training on a sample, done
once and shared by both arms, + adds),
QPS of one batch of ``--queries`` queries, recall@1 against exact search; unsharded (one
index, all threads) and sharded (``--shards`` indexes from the same trained template, filled
in parallel threads as the Ray tasks of ``ipl index`` do, searched in parallel and merged by
``ipl.index.faiss_index.merge_topk``). Ratios are against exact search measured in the same
run.

``--embed-run`` also measures the Ray Data embedding stage (``ListingEmbedder`` actor pool)
on that run's cleaned listings with 1 and then 2 actors (one torch thread each), in one Ray
session, each after a warm-up pass. ``--compare-clip DIR`` adds the same measurement (1 actor)
with another encoder side by side (e.g. the tiny CLIP the packaged one replaced:
``bench/index.py --n 0 --embed-run runs/demo --compare-clip runs/tiny-clip``), and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipl.index.faiss_index import (factory_string, fill_shard, merge_topk, normalize,  # noqa: E402
                                   set_search_params, trained_template)


def make_vectors(n: int, dim: int, centres: int, seed: int, spread: float = 1.0,
                 chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = normalize(rng.normal(size=(centres, dim)).astype(np.float32))
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = c[rng.integers(0, centres, b - a)] + rng.normal(scale=spread / np.sqrt(dim), size=(b - a, dim)).astype(
            np.float32)
        out[a:b] = normalize(x)
    return out


def exact(x: np.ndarray, q: np.ndarray, k: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(x.shape[1])
    t0 = time.monotonic()
    index.add(x)
    build = time.monotonic() - t0
    t0 = time.monotonic()
    scores, ids = index.search(q, k)
    return {"build_s": build, "search_s": time.monotonic() - t0}, ids


def train_kind(kind: str, x: np.ndarray, args) -> tuple[str, np.ndarray, float]:
    """The trained empty template (coarse quantizer + PQ codebooks), shared by both arms."""
    import faiss

    n, dim = x.shape
    spec = factory_string(kind, dim, n, args.nlist, args.pq_m, 8, args.hnsw_m)
    rng = np.random.default_rng(1)
    sample = x[rng.choice(n, min(n, args.train_sample), replace=False)] if "IVF" in spec else x[:1]
    faiss.omp_set_num_threads(args.threads)
    t0 = time.monotonic()
    template = trained_template(spec, dim, sample, args.ef_construction)
    return spec, template, time.monotonic() - t0


def run_kind(kind: str, spec: str, template, train_s: float, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
             args, sharded: bool) -> dict:
    import faiss

    n = len(x)
    t0 = time.monotonic()
    if sharded:
        bounds = np.linspace(0, n, args.shards + 1).astype(int)
        with ThreadPoolExecutor(args.threads) as pool:
            shards = list(pool.map(lambda ab: fill_shard(template, x[ab[0]:ab[1]], 1), zip(bounds[:-1], bounds[1:])))
        offsets = [int(a) for a in bounds[:-1]]
    else:
        shards, offsets = [fill_shard(template, x, args.threads)], [0]
    add_s = time.monotonic() - t0
    for ix in shards:
        set_search_params(ix, args.nprobe, args.ef_search)
    t0 = time.monotonic()
    if sharded:
        faiss.omp_set_num_threads(1)
        with ThreadPoolExecutor(len(shards)) as pool:
            res = list(pool.map(lambda ix: ix.search(q, 10), shards))
        _, ids = merge_topk([r[0] for r in res], [r[1] for r in res], offsets, 10)
    else:
        faiss.omp_set_num_threads(args.threads)
        _, ids = shards[0].search(q, 10)
    search_s = time.monotonic() - t0
    out = {"kind": kind, "factory": spec, "sharded": sharded, "shards": len(shards), "train_s": round(train_s, 2),
           "add_s": round(add_s, 2), "build_s": round(train_s + add_s, 2), "qps": round(len(q) / search_s, 1),
           "recall_at_1": float(np.mean(ids[:, 0] == truth[:, 0])),
           "recall_1_at_10": float(np.mean([t in row for t, row in zip(truth[:, 0], ids)]))}
    del shards
    return out


def embed_throughput(run: Path, concurrency: int, clip_dir=None) -> dict:
    import shutil
    import tempfile

    from ipl.config import load_config
    from ipl.index.config import IndexConfig
    from ipl.index.stage import embed
    from ipl.runtime import ensure_ray

    cfg = load_config(IndexConfig, REPO / "jobs/configs/index_local.yaml",
                      [f"run.root={run.parent}", f"run.name={run.name}", f"embed.concurrency={concurrency}",
                       "embed.num_cpus=0.5", "ray.progress=false", "feature_cache=false"])
    # 1 torch thread per actor; the Parquet read needs one whole free CPU (Ray 2.60), so 2 actors
    # x 0.5 CPU leave it one; no trunk feature cache: the encoder itself is measured (the warm-up
    # pass would fill the cache and the timed pass would run the projection alone)
    ensure_ray(cfg.ray)
    clip = str(clip_dir or (cfg.clip_dir if cfg.clip_dir.is_dir() else cfg.base_clip))
    out = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        embed(cfg, clip, None, out / "e")  # warm-up: actor start, model load, first reads
        shutil.rmtree(out / "e")
        t0 = time.monotonic()
        embed(cfg, clip, None, out / "e")
        wall = time.monotonic() - t0
        import pyarrow.dataset as pds

        rows = pds.dataset(str(out / "e"), format="parquet").count_rows()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"clip": clip, "concurrency": concurrency, "rows": rows, "seconds": round(wall, 1), "rows_per_s": round(rows / wall, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--centres", type=int, default=2000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--spread", type=float, default=1.0, help="radius of a cluster (centres are unit vectors)")
    p.add_argument("--query-noise", type=float, default=1.2, help="radius of a query around its source vector")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kinds", nargs="+", default=["IVF-Flat", "IVF-PQ", "HNSW"])
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--pq-m", type=int, default=64)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--train-sample", type=int, default=100_000)
    p.add_argument("--embed-run", type=Path, default=None, help="a run with clean/listings: embedding throughput")
    p.add_argument("--compare-clip", type=Path, default=None, help="another CLIP directory embedded side by side")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "index": []}
    if args.n:
        t0 = time.monotonic()
        x = make_vectors(args.n, args.dim, args.centres, 0, args.spread)
        rng = np.random.default_rng(2)
        q = normalize(x[rng.choice(args.n, args.queries, replace=False)]
                      + rng.normal(scale=args.query_noise / np.sqrt(args.dim), size=(args.queries, args.dim)).astype(np.float32))
        print(f"{args.n} x {args.dim} vectors in {time.monotonic() - t0:.0f}s", flush=True)
        flat, truth = exact(x, q, 10, args.threads)
        base = {"kind": "Flat", "factory": "Flat (exact)", "sharded": False, "shards": 1, "train_s": 0.0,
                "build_s": round(flat["build_s"], 2), "qps": round(args.queries / flat["search_s"], 1),
                "recall_at_1": 1.0, "recall_1_at_10": 1.0}
        results["index"].append(base)
        print(json.dumps(base), flush=True)
        for kind in args.kinds:
            spec, template, train_s = train_kind(kind, x, args)
            for sharded in (False, True):
                r = run_kind(kind, spec, template, train_s, x, q, truth, args, sharded)
                r["qps_vs_exact"] = round(r["qps"] / base["qps"], 2)
                results["index"].append(r)
                print(json.dumps(r), flush=True)
        del x
    if args.embed_run:
        results["embed"] = [embed_throughput(args.embed_run, c) for c in (1, 2)]
        e1, e2 = results["embed"]
        results["embed_ratio_2_vs_1"] = round(e2["rows_per_s"] / e1["rows_per_s"], 2)
        print(json.dumps(results["embed"]), f"ratio 2/1 actors: {results['embed_ratio_2_vs_1']}", flush=True)
        if args.compare_clip:
            other = embed_throughput(args.embed_run, 1, args.compare_clip)
            results["embed_compare"] = other
            results["embed_ratio_run_vs_compare"] = round(e1["rows_per_s"] / other["rows_per_s"], 3)
            print(json.dumps(other), f"ratio run's encoder / {args.compare_clip}: "
                  f"{results['embed_ratio_run_vs_compare']}", flush=True)
    print("\n| index | shards | train s | add s | QPS | QPS / exact | recall@1 | 1-recall@10 |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results["index"]:
        print(f"| {r['factory']} | {r['shards']} | {r['train_s']} | {r.get('add_s', r['build_s'])} | {r['qps']} | {r.get('qps_vs_exact', 1.0)} | "
              f"{r['recall_at_1']:.3f} | {r['recall_1_at_10']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
