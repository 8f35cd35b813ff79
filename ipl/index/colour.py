"""A photo-colour classifier: the ``photo`` basis of the evidence model for the colour key.

Image embeddings trained for identity say little about colour, and colour is in every
template. ``colour_features(image)`` is a histogram of the item's pixels in CIE LCh (lightness,
chroma, hue: the perceptual form of CIE Lab), counted with a centre weight (the item sits in
the middle of a listing photo), square-rooted so it has unit L2 norm:

* grey pixels (chroma below ``ACHROMATIC``, blended over its range) go to ``GREYS`` lightness
  bins alone: their hue is noise, and black, grey, silver and white differ by lightness;
* coloured pixels go to a joint ``HUES`` x ``LIGHTS`` x ``CHROMAS`` histogram;
* every bin is soft (linear interpolation between bin centres, hue circular), so a colour
  that falls near a bin edge does not flip to another bin under a little shading.

The first version was a hard-binned HSV histogram (12 hues x 3 saturations x 3 values). HSV
is not perceptual: 30-degree hue bins can put a pink and a red in one bin, and a white shirt's grey
folds and a print's colours weighed like the item's own colour. On the same demo run
(docs/retrieval.md) both read the synthetic held-out listings equally well (0.985); on the
real catalogue photos the HSV head read 0.51 of the colours, this one 0.63.

The item is what the background does not reach: the background's colour is estimated from
the photo's border (its median in CIE Lab), and the background region is flooded from the
border through pixels close to that colour that are not on an edge (a Lab step between
neighbours). So a white shirt on a white ground is the item when its outline closes it off,
instead of being thrown away with the ground while the wearer's skin and jeans are counted as
the item (real white garments on catalogue photos were read as gold or grey that way). A photo
where almost nothing is left (a flat frame) falls back to the centre-weighted whole photo. It
works the same on a drawn listing and on a real catalogue or phone photo, which is what lets a
head trained on one be read on the other. A linear softmax head on it
(:func:`ipl.index.category.train_head`, the category head's trainer) is fitted by ``ipl index``
on the indexed listings' own extracted colours, and calibrated like every other tier on the
held-out queries (tier ``photo:sku``). Saved inside the index version it was calibrated with
(``colour-head.safetensors`` + ``colour-head.json``, checksummed by the manifest, which also
records ``FEATURES``: a head fitted on other features is not loaded), so a rollback brings back
the head and its calibration together; the Retriever runs it on the photos it already decoded.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ipl.index.category import load_head, save_head, softmax
from ipl.photos import decode_photo

log = logging.getLogger(__name__)

SIDE = 64
GREYS, HUES, LIGHTS, CHROMAS = 6, 16, 4, 2
ACHROMATIC = (6.0, 14.0)  # CIE chroma: below the first a pixel is grey, above the second coloured
CHROMA_SPAN = 60.0  # chroma above ACHROMATIC[0] mapped onto the CHROMAS bins
FEATURE_DIM = GREYS + HUES * LIGHTS * CHROMAS
FEATURES = f"lch-{GREYS}g-{HUES}h{LIGHTS}l{CHROMAS}c"  # recorded with a head: what it was fitted on
BORDER = 4  # pixels of the 64 px thumbnail's frame that sample the background
FOREGROUND_DELTA = 15.0  # CIE Lab distance from the background's colour that marks an item pixel
EDGE_DELTA = 4.0  # CIE Lab step between neighbouring thumbnail pixels that stops the background flood
MIN_FOREGROUND = 0.05  # below this share of the centre weight, the whole photo is used
HEAD_FILE, LABELS_FILE = "colour-head.safetensors", "colour-head.json"


def _weights() -> np.ndarray:
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1) - 0.5
    return np.exp(-(x ** 2 + y ** 2) / (2 * 0.22 ** 2)).ravel()


_W = _weights()
_FRAME = np.zeros((SIDE, SIDE), bool)
_FRAME[:BORDER], _FRAME[-BORDER:], _FRAME[:, :BORDER], _FRAME[:, -BORDER:] = True, True, True, True
_FRAME = _FRAME.ravel()


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values in [0, 255], shape (..., 3)."""
    c = np.asarray(rgb, np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32)
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _grow(reached: np.ndarray, passable: np.ndarray) -> np.ndarray:
    grown = reached.copy()
    grown[1:] |= reached[:-1]
    grown[:-1] |= reached[1:]
    grown[:, 1:] |= reached[:, :-1]
    grown[:, :-1] |= reached[:, 1:]
    return grown & passable


def _flood(passable: np.ndarray, steps: Optional[int] = None, seed: Optional[np.ndarray] = None) -> np.ndarray:
    """The (SIDE, SIDE) pixels reachable from ``seed`` (default: the frame) through ``passable``
    ones (4-neighbours), in at most ``steps`` steps (None: until nothing changes)."""
    if seed is None:
        seed = np.zeros_like(passable)
        seed[[0, -1], :], seed[:, [0, -1]] = passable[[0, -1], :], passable[:, [0, -1]]
    reached, n = seed, 0
    while steps is None or n < steps:
        grown = _grow(reached, passable) | reached
        if np.array_equal(grown, reached):
            break
        reached, n = grown, n + 1
    return reached


def item_weights(rgb: np.ndarray, lab: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-pixel weights of a (SIDE*SIDE, 3) thumbnail: centre weight on the item, the pixels the
    background flood from the border does not reach (the whole centre-weighted photo when almost
    nothing is left). ``lab``: the thumbnail in CIE Lab when the caller has it already."""
    lab = srgb_to_lab(rgb) if lab is None else lab
    background = np.median(lab[_FRAME], axis=0)
    near = (np.linalg.norm(lab - background, axis=1) <= FOREGROUND_DELTA).reshape(SIDE, SIDE)
    grid = lab.reshape(SIDE, SIDE, 3)
    step = np.zeros((SIDE, SIDE), np.float32)
    step[:-1] = np.linalg.norm(grid[1:] - grid[:-1], axis=-1)
    step[:, :-1] = np.maximum(step[:, :-1], np.linalg.norm(grid[:, 1:] - grid[:, :-1], axis=-1))
    edge = step > EDGE_DELTA
    edge[1:] |= edge[:-1].copy()  # both sides of a step
    edge[:, 1:] |= edge[:, :-1].copy()
    background = _flood(near & ~edge)
    background = _flood(near, steps=2, seed=background)  # the ground's side of the item's edge band
    item = ~background.ravel()
    w = _W * item
    return w if w.sum() >= MIN_FOREGROUND * _W.sum() else _W


def _soft(x: np.ndarray, n: int, circular: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft bins of values in [0, 1): (lower bin, upper bin, weight of the upper) per value, by
    linear interpolation between bin centres (circular: the last bin's upper neighbour is 0)."""
    pos = np.asarray(x, np.float32) * n - 0.5
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    hi = lo + 1
    if circular:
        return lo % n, hi % n, frac
    frac = np.where(lo < 0, 1.0, np.where(hi > n - 1, 0.0, frac)).astype(np.float32)
    return np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1), frac


def lch_histogram(lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The (FEATURE_DIM,) weighted soft histogram of Lab pixels: grey lightness bins, then the
    coloured pixels' hue x lightness x chroma bins (not normalised)."""
    light = np.clip(lab[:, 0] / 100.0, 0.0, 0.999)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    hue = (np.arctan2(lab[:, 2], lab[:, 1]) / (2 * np.pi)) % 1.0
    coloured = np.clip((chroma - ACHROMATIC[0]) / (ACHROMATIC[1] - ACHROMATIC[0]), 0.0, 1.0)
    grey_w, colour_w = weights * (1 - coloured), weights * coloured
    out = np.zeros(FEATURE_DIM, np.float64)
    lo, hi, f = _soft(light, GREYS)
    out[:GREYS] += np.bincount(lo, grey_w * (1 - f), GREYS) + np.bincount(hi, grey_w * f, GREYS)
    h = _soft(hue, HUES, circular=True)
    l = _soft(light, LIGHTS)
    c = _soft(np.clip((chroma - ACHROMATIC[0]) / CHROMA_SPAN, 0.0, 0.999), CHROMAS)
    joint = np.zeros(HUES * LIGHTS * CHROMAS, np.float64)
    for hb, hw in ((h[0], 1 - h[2]), (h[1], h[2])):
        for lb, lw in ((l[0], 1 - l[2]), (l[1], l[2])):
            for cb, cw in ((c[0], 1 - c[2]), (c[1], c[2])):
                joint += np.bincount((hb * LIGHTS + lb) * CHROMAS + cb, colour_w * hw * lw * cw, joint.size)
    out[GREYS:] = joint
    return out


def colour_features(photo) -> np.ndarray:
    img = decode_photo(photo).convert("RGB").resize((SIDE, SIDE))
    rgb = np.asarray(img, dtype=np.float32).reshape(-1, 3)
    lab = srgb_to_lab(rgb)
    hist = lch_histogram(lab, item_weights(rgb, lab))
    return np.sqrt(hist / max(hist.sum(), 1e-12)).astype(np.float32)


def photos_features(photos: Sequence) -> np.ndarray:
    """The mean feature of a listing's photos (L2-normalised)."""
    f = np.mean([colour_features(p) for p in photos], axis=0)
    return f / max(float(np.linalg.norm(f)), 1e-12)


def save_colour_head(head: dict, out_dir: Path, key: str) -> None:
    """Write the head into a (staged) index version directory."""
    save_head(head, out_dir, None, HEAD_FILE, LABELS_FILE, key=key, features=FEATURES)


class ColourPredictor:
    """``predict(photos, k)``: the top-k colour values with probabilities."""

    def __init__(self, head: dict):
        self.key, self.classes = head["key"], list(head["classes"])
        self.weight, self.bias = head["weight"], head["bias"]

    @classmethod
    def load(cls, head_dir: Path) -> Optional["ColourPredictor"]:
        head = load_head(Path(head_dir), HEAD_FILE, LABELS_FILE)
        if head is None:
            return None
        if head.get("features") != FEATURES or head["weight"].shape[1] != FEATURE_DIM:
            log.warning("%s: the photo-colour head was fitted on %s features, these are %s: not used (rebuild the "
                        "index to fit it again)", head_dir, head.get("features", "older"), FEATURES)
            return None
        return cls(head)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(np.atleast_2d(features) @ self.weight.T + self.bias)

    def predict_features(self, features: np.ndarray, k: int = 3) -> list[list[dict]]:
        probs = self.probabilities(features)
        top = np.argsort(-probs, axis=1)[:, :k]
        return [[{"value": self.classes[j], "score": float(p[j])} for j in row] for row, p in zip(top, probs)]

    def predict(self, photos: Sequence, k: int = 3) -> list[dict]:
        return self.predict_features(photos_features(photos)[None, :], k)[0]
