"""Benchmark of the cleaning stage of ``ipl prepare``: Ray Data against one process, and peak
memory at two sizes, side by side in one run.

    .venv/bin/python bench/prepare.py --data /work/bench-data/synth       # 100k + 1M rows
    .venv/bin/python bench/prepare.py --data DIR --rows 100000            # one size

``--data`` holds ``bench<rows>/raw`` directories made by ``bench/synth.py --root DIR`` (or
``ipl synth rows=N run.root=DIR run.name=bench<N>``). What is timed is the pass that sees
every raw row: the text filters of Appendix A.1 (quality, risk flags, length, privacy,
special characters; NFKC first) and the MinHash signature of each description
(``ipl.data.pipeline.text_filter_batch``), reading the Parquet shards without their photos and
writing the result as Parquet. Two arms, each in a fresh process while a sampler sums the PSS
of its process tree every 2 s:

* Ray Data (local Ray, all cores): ``read_listings`` (the pipeline's reader: Parquet without
  the photos, streaming repartition into ``input.block_rows`` blocks) ``->
  map_batches(text_filter_batch) -> write_parquet``, as ``ipl prepare`` composes it;
* the baseline: one process, no Ray, ``pyarrow`` batches through the same function, written
  with one ``ParquetWriter``.

It prints rows/s and peak memory per arm and size, the throughput ratio and the peak-memory
ratio of the largest size to the smallest (streaming must keep it flat while rows grow 10x).
The photo pass (image-text check, extraction) runs on the survivors only and is dominated by
model inference; it is not in this number.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from synth import run_measured  # noqa: E402  (the synth benchmark's runner and memory sampler)

PHOTO_COLUMNS = ("photos", "photo_paths")


def _columns(raw: Path) -> list[str]:
    import pyarrow.parquet as pq

    first = sorted(raw.glob("*.parquet"))[0]
    return [n for n in pq.read_schema(first).names if n not in PHOTO_COLUMNS]


def arm_ray(raw: str, out: str, batch_size: int, object_store_mb: int = 0) -> int:
    import ray

    from ipl.data.clean import CleanConfig
    from ipl.data.pipeline import text_filter_batch

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             object_store_memory=object_store_mb * 2**20 if object_store_mb else None)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    from ipl.data.read import InputConfig, read_listings

    # the pipeline's own reader: column check, photos not read, streaming repartition, canonical names
    ds, _ = read_listings(InputConfig(path=raw, format="parquet"), Path(raw).parent, exclude=PHOTO_COLUMNS)
    ds = ds.map_batches(text_filter_batch, fn_kwargs={"cfg": CleanConfig()}, batch_size=batch_size)
    ds.write_parquet(out)
    import pyarrow.dataset as pds

    return pds.dataset(out, format="parquet").count_rows()


def arm_single(raw: str, out: str, batch_size: int) -> int:
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    from ipl.data.arrow import to_table
    from ipl.data.clean import CleanConfig
    from ipl.data.pipeline import text_filter_batch

    cfg = CleanConfig()
    data = pds.dataset(sorted(str(p) for p in Path(raw).glob("*.parquet")), format="parquet")
    writer, rows = None, 0
    Path(out).mkdir(parents=True, exist_ok=True)
    for batch in data.to_batches(columns=_columns(Path(raw)), batch_size=batch_size):
        cols = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
        table = to_table(text_filter_batch(cols, cfg))
        if writer is None:
            writer = pq.ParquetWriter(str(Path(out) / "part-0.parquet"), table.schema)
        writer.write_table(table)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    return rows


def measure(arm: str, raw: Path, batch_size: int, tmp: Path, object_store_mb: int = 0) -> dict:
    out = tmp / f"{arm}-{raw.parent.name}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--arm", arm, "--raw", str(raw), "--out", str(out), "--batch-size",
           str(batch_size), "--object-store-mb", str(object_store_mb)]
    text, elapsed, peak = run_measured(cmd, f"{arm} on {raw}")
    rows = int(next(line for line in text.splitlines() if line.startswith("ROWS="))[5:])  # Ray may log after it
    shutil.rmtree(out, ignore_errors=True)
    return {"arm": arm, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "peak_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder with bench<rows>/raw (from bench/synth.py --root)")
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--single-rows", type=int, nargs="*", help="sizes the single-process arm runs (default: all)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--object-store-mb", type=int, default=0, help="cap Ray's object store (0: Ray's default, 30%% "
                    "of memory), as ray.object_store_mb does for ipl prepare")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--arm", choices=["ray", "single"], help=argparse.SUPPRESS)
    ap.add_argument("--raw", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:  # a measured child process
        rows = (arm_ray(args.raw, args.out, args.batch_size, args.object_store_mb) if args.arm == "ray"
                else arm_single(args.raw, args.out, args.batch_size))
        print(f"ROWS={rows}", flush=True)
        return
    if not args.data:
        raise SystemExit("--data DIR is required (bench<rows>/raw from `bench/synth.py --root DIR`)")
    missing = [n for n in args.rows if not (Path(args.data) / f"bench{n}" / "raw").is_dir()]
    if missing:
        raise SystemExit(f"no raw listings for {missing} under {args.data}: run "
                         f"`.venv/bin/python bench/synth.py --root {args.data} --rows {' '.join(map(str, missing))}`")
    single = set(args.single_rows if args.single_rows is not None else args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="ipl-bench-prepare-"))
    results = []
    try:
        for n in sorted(args.rows):
            raw = Path(args.data) / f"bench{n}" / "raw"
            for arm in (["single"] if n in single else []) + ["ray"]:
                r = measure(arm, raw, args.batch_size, tmp, args.object_store_mb if arm == "ray" else 0)
                results.append(r)
                print(f"done: {arm} {r['rows']} rows in {r['seconds']:.1f}s ({r['rows_per_s']:.0f} rows/s), "
                      f"peak {r['peak_mb']:.0f} MB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; text pass of ipl prepare (filters + MinHash), photos not read")
    print(f"{'what':<30}{'rows':>10}{'seconds':>10}{'rows/s':>10}{'peak MB':>10}")
    for r in results:
        name = "Ray Data (local, streaming)" if r["arm"] == "ray" else "single process (baseline)"
        print(f"{name:<30}{r['rows']:>10}{r['seconds']:>10.1f}{r['rows_per_s']:>10.0f}{r['peak_mb']:>10.0f}")
    for n in sorted(args.rows):
        pair = {r["arm"]: r for r in results if r["rows"] == n}
        if "single" in pair:
            print(f"throughput ratio at {n} rows, Ray Data / single process: "
                  f"{pair['ray']['rows_per_s'] / pair['single']['rows_per_s']:.2f}x")
    ray_runs = [r for r in results if r["arm"] == "ray"]
    if len(ray_runs) > 1:
        small, big = ray_runs[0], ray_runs[-1]
        print(f"peak memory ratio (Ray Data), {big['rows']} rows / {small['rows']} rows: "
              f"{big['peak_mb'] / small['peak_mb']:.2f} (rows ratio {big['rows'] / small['rows']:.0f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
