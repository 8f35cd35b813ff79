"""Why ``ipl eval``'s identical (SKU) top-1 sits where it does, read off finished demo directories.

For each ``indexed_sku`` query of ``eval/examples.jsonl`` (its first photo, embedded by the run's
CLIP, against every listing of the current index version but itself, by brute force over the
shards' vectors) the top hit is counted as the query's own SKU, a sibling variant of the same
SPU and colour (split by whether the encoder was fine-tuned on that sibling's listings: the
evaluated SKUs' listings never are, ``eval.untrained_split``), or another product. Beside it, the
coin toss a photo-identical variant allows: the own SKU's share of its SPU-and-colour group's
indexed listings times the same-SPU-and-colour top-1. With ``--csls K ...`` the same queries are
also ranked by CSLS (similarity minus half a listing's mean similarity to its K nearest indexed
listings), a re-ranking that penalises "hub" listings.

    .venv/bin/python bench/identical_top1.py --run runs/demo [runs/other ...] [--csls 5 10 20]
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def index_vectors(index_root: Path) -> tuple[np.ndarray, list[dict]]:
    """The current version's vectors (L2-normalised) and their metadata rows, in id order (the shards as
    ``ShardedIndex.load`` checks and reads them)."""
    import faiss

    from ipl.index.search import ShardedIndex

    index = ShardedIndex.load(index_root, use_gpu=False)
    vecs = []
    for shard in index.shards:
        try:
            faiss.extract_index_ivf(shard).make_direct_map()
        except RuntimeError:  # a flat index reconstructs without one
            pass
        vecs.append(shard.reconstruct_n(0, shard.ntotal))
    rows = index.metadata.sort_index()[["listing_id", "sku_id", "spu_id"]].to_dict("records")
    index.close()
    x = np.concatenate(vecs).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), rows


def read_run(run: Path, csls: list[int]) -> dict:
    import pyarrow.dataset as pds

    from ipl.config import load_config
    from ipl.data.instructions import split_column
    from ipl.demo import DemoConfig
    from ipl.index.calibration import sku_values
    from ipl.models.clip import load_clip
    from ipl.photos import decode_photo

    cfg = load_config(DemoConfig, ROOT / "jobs" / "configs" / "demo_local.yaml",
                      [f"run.root={run.parent}", f"run.name={run.name}"]).stage("eval")
    x, rows = index_vectors(cfg.serve_config().index_root)
    listings = pds.dataset(str(run / "clean" / "listings"), format="parquet").to_table(
        columns=["listing_id", "sku_id", "spu_id", "extracted", "photos"]).to_pylist()
    meta = {r["listing_id"]: r for r in listings}
    colour = sku_values([r["sku_id"] for r in listings], [r["extracted"] for r in listings], "Color")
    untrained = split_column(run / "instructions", "validation", "group")
    examples = [json.loads(line) for line in (run / "eval" / "examples.jsonl").read_text().splitlines()]
    examples = [e for e in examples if e["set"] == "indexed_sku"]
    if not examples:
        raise SystemExit(f"{run}: no indexed_sku examples (run `ipl eval`)")
    clip = load_clip(cfg.serve_config().clip_dir)
    q = clip.encode_images([decode_photo(meta[e["listing_id"]]["photos"][0]) for e in examples]).numpy()
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    group = lambda lid: (meta[lid]["spu_id"], colour.get(meta[lid]["sku_id"]))  # noqa: E731
    per_group = collections.Counter(group(r["listing_id"]) for r in rows)
    per_sku = collections.Counter(r["sku_id"] for r in rows)
    position = {r["listing_id"]: i for i, r in enumerate(rows)}
    sims = q @ x.T
    hub = {0: np.zeros(len(x), np.float32)}
    if csls:
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        ranked = np.sort(s, axis=1)
        hub.update({k: ranked[:, -k:].mean(1) for k in csls})
    out = {"run": str(run), "queries": len(examples)}
    for k, r in hub.items():
        counts = collections.Counter()
        for i, e in enumerate(examples):
            score = sims[i] - r / 2
            if e["listing_id"] in position:
                score[position[e["listing_id"]]] = -np.inf  # the query itself is never its own hit
            hit = rows[int(np.argmax(score))]
            mine = meta[e["listing_id"]]
            if hit["sku_id"] == mine["sku_id"]:
                counts["own SKU"] += 1
            elif group(hit["listing_id"]) == group(e["listing_id"]):
                counts["sibling, " + ("untrained" if hit["sku_id"] in untrained else "trained")] += 1
            else:
                counts["other product"] += 1
            if k == 0:
                counts["_share"] += per_sku[mine["sku_id"]] / max(1, per_group[group(e["listing_id"])])
        n = len(examples)
        row = {"identical_top1": counts["own SKU"] / n,
               "same_spu_colour_top1": (counts["own SKU"] + counts["sibling, trained"] + counts["sibling, untrained"]) / n,
               "hits": {c: v for c, v in counts.items() if not c.startswith("_")}}
        if k == 0:
            row["own_share"] = counts["_share"] / n
            row["coin_toss"] = row["own_share"] * row["same_spu_colour_top1"]
            out["similarity"] = row
        else:
            out[f"csls_k{k}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", nargs="+", required=True, help="finished demo run directories (runs/demo)")
    ap.add_argument("--csls", nargs="*", type=int, default=[], help="also rank by CSLS with these K")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "identical_top1.json"))
    args = ap.parse_args()
    results = [read_run(Path(r), args.csls) for r in args.run]
    for res in results:
        s = res["similarity"]
        print(f"{res['run']}: {res['queries']} queries; identical top-1 {s['identical_top1']:.3f}, same SPU and colour "
              f"{s['same_spu_colour_top1']:.3f}; the own SKU's share of its group {s['own_share']:.3f}, so a coin toss "
              f"weighted by listings gives {s['coin_toss']:.3f}; top hits {s['hits']}")
        for k in args.csls:
            c = res[f"csls_k{k}"]
            print(f"  CSLS k={k}: identical top-1 {c['identical_top1']:.3f}, same SPU and colour "
                  f"{c['same_spu_colour_top1']:.3f}; top hits {c['hits']}")
    total = collections.Counter()
    for res in results:
        total.update(res["similarity"]["hits"])
    print(f"all runs: top hits {dict(total)}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
