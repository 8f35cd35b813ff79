"""Benchmark of ``ipl synth``: rows/s and peak memory at two sizes, side by side in one run.

    .venv/bin/python bench/synth.py                      # 100k and 1M rows (~40 min on 2 cores)
    .venv/bin/python bench/synth.py --rows 10000 100000  # quicker (~7 min)

Each size runs ``ipl synth`` (Ray Data, local Ray, fresh process) into a temporary run
directory while a sampler sums the PSS of the whole process tree (driver, raylet, Ray
workers) every 2 seconds. The baseline is a single-process loop over the same
``ListingFactory`` on a slice, in the same run. It prints a table and the ratios that
matter: Ray Data / single-process throughput, and peak memory at the largest size / the
smallest (streaming must keep it flat: ratio close to 1 while rows grow 10x).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total


def run_measured(cmd: list[str], what: str) -> tuple[str, float, int]:
    """Run ``cmd`` in a fresh process (no RAY_ADDRESS) while sampling the PSS of its process
    tree every 2 s; returns (output, seconds, peak bytes). A failure stops the benchmark."""
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, tree_pss(ps))
            except psutil.Error:
                pass
            stop.wait(2.0)  # PSS reads cost CPU: sample every 2 s

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    stop.set()
    t.join()
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out[-3000:]}")
    return out, elapsed, peak


def run_synth(rows: int, shard_rows: int, root: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ipl.cli", "synth", f"run.root={root}", f"run.name=bench{rows}", f"rows={rows}",
           f"shard_rows={shard_rows}", "models.build=false", "ray.progress=false", *extra]
    _, elapsed, peak = run_measured(cmd, f"ipl synth rows={rows}")
    manifest = json.loads((Path(root) / f"bench{rows}" / "raw" / "_manifest.json").read_text())
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "peak_mb": peak / 2**20,
            "disk_mb": manifest["bytes"] / 2**20}


def baseline(rows: int) -> dict:
    """Single process, no Ray: the same factory over ``rows`` rows."""
    from ipl.synth.config import SynthConfig
    from ipl.synth.generate import ListingFactory

    factory = ListingFactory(SynthConfig(rows=rows, models={"build": False}))
    start = time.monotonic()
    step = 1000
    for i in range(0, rows, step):
        factory.table(i, min(rows, i + step))
    elapsed = time.monotonic() - start
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--shard-rows", type=int, default=5000)
    ap.add_argument("--baseline-rows", type=int, default=5000)
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--root", help="write the runs here (kept) instead of a temporary directory; "
                    "bench/prepare.py can read them back")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("extra", nargs="*", help="extra key=value overrides for ipl synth")
    args = ap.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="ipl-bench-synth-")
    if args.root:
        args.keep = True
        Path(root).mkdir(parents=True, exist_ok=True)
    try:
        base = baseline(args.baseline_rows)
        runs = []
        for n in sorted(args.rows):
            runs.append(run_synth(n, args.shard_rows, root, args.extra))
            r = runs[-1]
            print(f"done: {n} rows in {r['seconds']:.1f}s ({r['rows_per_s']:.0f} rows/s), peak {r['peak_mb']:.0f} MB",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; photos 1-2 per listing at 112 px (default synth config)")
    print(f"{'what':<34}{'rows':>10}{'seconds':>10}{'rows/s':>10}{'peak MB':>10}{'disk MB':>10}")
    print(f"{'single process (baseline)':<34}{base['rows']:>10}{base['seconds']:>10.1f}{base['rows_per_s']:>10.0f}"
          f"{'-':>10}{'-':>10}")
    for r in runs:
        print(f"{'ipl synth (Ray Data, local)':<34}{r['rows']:>10}{r['seconds']:>10.1f}{r['rows_per_s']:>10.0f}"
              f"{r['peak_mb']:>10.0f}{r['disk_mb']:>10.0f}")
    big, small = runs[-1], runs[0]
    print(f"throughput ratio, Ray Data / single process at {big['rows']} rows: "
          f"{big['rows_per_s'] / base['rows_per_s']:.2f}x")
    print(f"peak memory ratio, {big['rows']} rows / {small['rows']} rows: {big['peak_mb'] / small['peak_mb']:.2f} "
          f"(rows ratio {big['rows'] / small['rows']:.0f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": base, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
