"""The CLIP image trunk on torch eager (baseline) and on ONNX Runtime (ipl.models.trunk_runtime), side
by side on the same photos, the same model and the same thread count: photos per second of the
trunk's features and of whole embeddings (preprocessing included), and the largest difference of
the features and embeddings between the two.

    .venv/bin/python bench/clip_runtime.py --run runs/demo                 # the demo's photos and CLIP
    .venv/bin/python bench/clip_runtime.py --run runs/demo --threads 2 --photos 512

The arms alternate (``--rounds`` times each, the best round reported, so a busy moment of a shared
machine does not decide). The photos are the run's raw listings' first photos.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipl.models.clip import load_clip  # noqa: E402
from ipl.photos import decode_photo  # noqa: E402


def photos(run: Path, n: int) -> list:
    out = []
    for f in sorted(glob.glob(str(run / "raw" / "*.parquet"))):
        for plist in pq.read_table(f, columns=["photos"]).column("photos").to_pylist():
            if plist:
                out.append(decode_photo(plist[0]))
            if len(out) >= n:
                return out
    if not out:
        raise SystemExit(f"{run}/raw has no listing photos: run `ipl synth` (or `make demo`) first")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="a run directory (its raw/ photos, its models/)")
    ap.add_argument("--clip", help="a CLIP directory (default: the run's fine-tuned one, else its base one)")
    ap.add_argument("--photos", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (Ray actors use 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    run = Path(args.run)
    source = args.clip or next((str(p) for p in (run / "models" / "clip", run / "models" / "clip-base")
                                if (p / "open_clip_config.json").is_file()), None)
    if source is None:
        raise SystemExit(f"no CLIP under {run}/models: run `ipl synth` (or `make demo`) first, or give --clip")
    torch.set_num_threads(args.threads)
    images = photos(run, args.photos)
    arms = {name: load_clip(source, trunk_runtime=name) for name in ("torch", "onnxruntime")}
    for clip in arms.values():  # warm-up: the ONNX export, torch's first-call allocations
        clip.encode_images(images[:8])
    best: dict = {name: {"features": 0.0, "embeddings": 0.0} for name in arms}
    for _ in range(args.rounds):
        for name, clip in arms.items():
            t = time.perf_counter()
            feats = clip.trunk_features(images)
            best[name]["features"] = max(best[name]["features"], len(images) / (time.perf_counter() - t))
            t = time.perf_counter()
            emb = clip.encode_images(images)
            best[name]["embeddings"] = max(best[name]["embeddings"], len(images) / (time.perf_counter() - t))
            best[name]["_out"] = (feats, emb)
    (f0, e0), (f1, e1) = best["torch"].pop("_out"), best["onnxruntime"].pop("_out")
    result = {"clip": source, "photos": len(images), "threads": args.threads, "rounds": args.rounds,
              "photos_per_s": best,
              "speedup": {k: round(best["onnxruntime"][k] / best["torch"][k], 2) for k in ("features", "embeddings")},
              "max_abs_diff": {"features": float((f0 - f1).abs().max()), "embeddings": float((e0 - e1).abs().max())},
              "ran_on": arms["onnxruntime"].trunk_runtime}
    print(f"{len(images)} photos, {args.threads} thread(s), best of {args.rounds} rounds, CLIP {source}")
    print("| arm | trunk features photos/s | embeddings photos/s |\n|---|---|---|")
    for name in arms:
        print(f"| {name} | {best[name]['features']:.1f} | {best[name]['embeddings']:.1f} |")
    print(f"ONNX Runtime / torch: features {result['speedup']['features']}x, embeddings "
          f"{result['speedup']['embeddings']}x; largest difference: features "
          f"{result['max_abs_diff']['features']:.2e}, embeddings {result['max_abs_diff']['embeddings']:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
