"""The photo-colour head's features side by side: the earlier hard HSV histogram (baseline) and
the CIE LCh histogram of ipl.index.colour, each fitted the way ``ipl index`` fits the head
(ipl.index.category.train_head, same epochs and rate) on one run's synthetic listings, then read on

* the run's synthetic held-out listings (1 in 10 by listing-id hash),
* the same held-out photos under a random photometric shift drawings never see (saturation
  x0.6-1.4, gamma 0.7-1.5, a horizontal shading ramp, a little blur), seeded,
* the real catalogue photos of ../shared/realdata/fashion (evaluation only; skipped with a
  reason when missing), with the commonest confusions.

    .venv/bin/python bench/colour_features.py --run runs/demo     # after ipl synth (reads raw/)
"""
from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipl.extract.matcher import AttributeMatcher  # noqa: E402
from ipl.index.calibration import key_values  # noqa: E402
from ipl.index.category import train_head  # noqa: E402
from ipl.index.colour import SIDE, ColourPredictor, colour_features, item_weights  # noqa: E402
from ipl.photos import decode_photo  # noqa: E402


def hsv_features(photo) -> np.ndarray:
    """The earlier features: a hard 12 x 3 x 3 HSV histogram of the same item pixels."""
    img = decode_photo(photo).convert("RGB").resize((SIDE, SIDE))
    w = item_weights(np.asarray(img, dtype=np.float32).reshape(-1, 3))
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32).reshape(-1, 3) / 256.0
    h, s, v = (np.minimum((hsv[:, i] * n).astype(int), n - 1) for i, n in ((0, 12), (1, 3), (2, 3)))
    hist = np.bincount((h * 3 + s) * 3 + v, weights=w, minlength=108)
    return np.sqrt(hist / max(hist.sum(), 1e-12)).astype(np.float32)


def shift(img: Image.Image, rng) -> Image.Image:
    img = ImageEnhance.Color(img.convert("RGB")).enhance(rng.uniform(0.6, 1.4))
    a = (np.asarray(img, np.float32) / 255.0) ** rng.uniform(0.7, 1.5)
    a = np.clip(a * np.linspace(rng.uniform(0.65, 1.0), rng.uniform(0.85, 1.15), a.shape[1])[None, :, None], 0, 1)
    return Image.fromarray((a * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def mean_feature(fn, photos) -> np.ndarray:
    f = np.mean([fn(p) for p in photos], axis=0)
    return f / max(float(np.linalg.norm(f)), 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="run directory with raw/ from ipl synth")
    ap.add_argument("--realdata", default=str(ROOT.parent / "shared" / "realdata"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    parts = sorted(glob.glob(str(Path(args.run) / "raw" / "part-*.parquet")))
    if not parts:
        print(f"no raw listings under {args.run}/raw: run ipl synth first", file=sys.stderr)
        return 2
    rows = []
    for f in parts:
        rows += [r for r in pq.read_table(f, columns=["listing_id", "photos", "attributes", "dirty_reason"]).to_pylist()
                 if r["dirty_reason"] is None and r["photos"]]
    labels = key_values([r["attributes"] for r in rows], "Color")
    rows, y = [r for r, lab in zip(rows, labels) if lab], np.array([lab for lab in labels if lab])
    hold = np.array([int(hashlib.md5(r["listing_id"].encode()).hexdigest(), 16) % 10 == 0 for r in rows])
    photos = [[decode_photo(p) for p in r["photos"][:3]] for r in rows]
    rng = np.random.default_rng(0)
    shifted = [[shift(p, rng) for p in ph] for ph, h in zip(photos, hold) if h]
    fashion = Path(args.realdata) / "fashion"
    real = [json.loads(line) for line in open(fashion / "styles.jsonl")] if (fashion / "styles.jsonl").is_file() else []
    real_images = [Image.open(fashion / r["image"]).convert("RGB") for r in real]
    matcher = AttributeMatcher([["grey", "gray"], ["navy", "navy blue"], ["beige", "cream"], ["silver", "silver grey"]])
    print(f"{len(rows)} synthetic listings ({int(hold.sum())} held out), {len(real)} real photos"
          + ("" if real else f" (skipped: {fashion / 'styles.jsonl'} missing)"))
    print("| features | dim | synthetic held-out | photometric shift | real fashion colour | ms a photo | commonest real confusions |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in (("hard HSV 12x3x3 (before)", hsv_features), ("CIE LCh (ipl.index.colour)", colour_features)):
        started = time.perf_counter()
        x = np.stack([mean_feature(fn, ph) for ph in photos])
        ms = (time.perf_counter() - started) * 1000 / sum(len(ph) for ph in photos)
        xs = np.stack([mean_feature(fn, ph) for ph in shifted])
        head = train_head(x[~hold], list(y[~hold]), args.epochs, args.lr, 1e-4, seed=0)
        pred = ColourPredictor({**head, "key": "Color"})

        def top(feats):
            return np.array([p[0]["value"] for p in pred.predict_features(feats, 1)])

        syn, sh = float(np.mean(top(x[hold]) == y[hold])), float(np.mean(top(xs) == y[hold]))
        real_top1, confusions = "-", ""
        if real:
            got = top(np.stack([fn(im) for im in real_images]))
            truth = [next((c for c in head["classes"] if matcher.same(r["baseColour"], c)), None) for r in real]
            real_top1 = f"{np.mean([g == t for g, t in zip(got, truth)]):.2f}"
            wrong = collections.Counter(f"{r['baseColour']}→{g}" for r, g, t in zip(real, got, truth) if g != t)
            confusions = ", ".join(f"{k} {v}" for k, v in wrong.most_common(4))
        print(f"| {name} | {x.shape[1]} | {syn:.3f} | {sh:.3f} | {real_top1} | {ms:.1f} | {confusions} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
