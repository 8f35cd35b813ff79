"""The demo's headline numbers as mean and range over several runs (the order of distributed work in
training and the encoder fine-tuning still varies between runs, so one run is not exact).

    python bench/demo_repeat.py --runs 3                      # ipl demo run.name=repeat-1..3, then the table
    python bench/demo_repeat.py --runs 0 --include runs/demo  # only gather runs that exist

Each run is a full ``ipl demo`` in its own run directory (a finished one, with eval/metrics.json, is
reused). Prints and writes ``runs/repeat.json``: every headline number per run, its mean, min and max.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HEADLINES = {
    "Table 7 system ACC": ("ablation", "table", "all", "image+category+reference", "acc"),
    "Table 7 system precision": ("ablation", "table", "all", "image+category+reference", "precision"),
    "Table 7 system wrong values": ("ablation", "table", "all", "image+category+reference", "contradicted_values"),
    "Table 7 system partial values": ("ablation", "table", "all", "image+category+reference", "partial_values"),
    "Table 7 system near model numbers": ("ablation", "table", "all", "image+category+reference", "near_values"),
    "Table 7 system made-up condition values": ("ablation", "table", "all", "image+category+reference",
                                                "listing_facts", "unsupported"),
    "Table 7 system ACC, indexed SKUs": ("ablation", "table", "indexed_sku", "image+category+reference", "acc"),
    "Table 7 system ACC, unseen SKUs": ("ablation", "table", "unseen_sku", "image+category+reference", "acc"),
    "Table 7 unguarded ACC": ("ablation", "table", "all", "image+category+reference:unguarded", "acc"),
    "Table 7 unguarded wrong values": ("ablation", "table", "all", "image+category+reference:unguarded",
                                       "contradicted_values"),
    "confirmed ACC": ("ablation", "table", "all", "confirmed", "acc"),
    "domain average, base": ("domain", "average", "base"),
    "domain average, fine-tuned": ("domain", "average", "finetuned"),
    "identical top-1 (indexed SKUs)": ("retrieval", "indexed_sku", "identical_top1"),
    "similar top-1 (indexed SKUs)": ("retrieval", "indexed_sku", "similar_top1"),
    "similar top-1 (unseen SKUs)": ("retrieval", "unseen_sku", "similar_top1"),
    "real photos: no brand/model claimed": ("realdata", "ood", "no_product_fact"),
}


def pick(m: dict, path: tuple):
    for k in path:
        m = m.get(k) if isinstance(m, dict) else None
    return m if isinstance(m, (int, float)) else None


def gather(run_dirs: list[Path]) -> dict:
    runs = {}
    for d in run_dirs:
        f = d / "eval" / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text(encoding="utf-8"))
            runs[str(d)] = {name: pick(m, path) for name, path in HEADLINES.items()}
    summary = {}
    for name in HEADLINES:
        vals = [r[name] for r in runs.values() if r[name] is not None]
        summary[name] = ({"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
                         if vals else None)
    return {"runs": runs, "summary": summary}


def table(result: dict) -> str:
    lines = ["| number | mean | range | runs |", "|---|---|---|---|"]
    for name, s in result["summary"].items():
        if s is None:
            lines.append(f"| {name} | — | — | 0 |")
        else:
            fmt = "{:.0f}" if name.endswith("values") else "{:.3f}"
            lines.append(f"| {name} | {fmt.format(s['mean'])} | {fmt.format(s['min'])} – {fmt.format(s['max'])} | "
                         f"{s['n']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="demo runs to make (0: only gather)")
    ap.add_argument("--prefix", default="repeat", help="run names <prefix>-1..N")
    ap.add_argument("--root", default="runs")
    ap.add_argument("--include", nargs="*", default=[], help="other finished run directories to count")
    ap.add_argument("--out", default=None, help="JSON result (default <root>/<prefix>.json)")
    args = ap.parse_args(argv)
    dirs = [Path(p) for p in args.include]
    for i in range(1, args.runs + 1):
        d = Path(args.root) / f"{args.prefix}-{i}"
        dirs.append(d)
        if (d / "eval" / "metrics.json").is_file():
            print(f"[{i}/{args.runs}] {d}: finished earlier, reused", flush=True)
            continue
        print(f"[{i}/{args.runs}] ipl demo run.name={d.name} run.root={args.root}", flush=True)
        code = subprocess.call([sys.executable, "-m", "ipl.cli", "demo", f"run.name={d.name}", f"run.root={args.root}"])
        if code:
            print(f"run {d} failed (exit {code}); re-run this command to resume it", file=sys.stderr)
            return code
    result = gather(dirs)
    out = Path(args.out) if args.out else Path(args.root) / f"{args.prefix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    print(f"({len(result['runs'])} runs; {out})")
    return 0 if result["runs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
