"""A photo-colour classifier: the ``photo`` basis of the evidence model for the colour key.

Image embeddings trained for identity say little about colour, and colour is in every
template. ``colour_features(image)`` is a joint HSV histogram (12 hues x 3 saturations x 3
values, square-rooted so it has unit L2 norm) of the item's pixels: the background's colour is
estimated from the photo's border (its median in CIE Lab), pixels far from it are the item,
and those are counted with a centre weight (the item sits in the middle of a listing photo).
A photo where almost nothing stands out from the border (a white shirt on white) falls back to
the centre-weighted whole photo. It works the same on a drawn listing and on a real catalogue
or phone photo, which is what lets a head trained on one be read on the other. A linear
softmax head on it (:func:`ipl.index.category.train_head`, the category head's trainer) is
fitted by ``ipl index`` on the indexed listings' own extracted colours, and calibrated like
every other tier on the held-out queries (tier ``photo:sku``). Saved inside the index version
it was calibrated with (``colour-head.safetensors`` + ``colour-head.json``, checksummed by the
manifest), so a rollback brings back the head and its calibration together; the Retriever
runs it on the photos it already decoded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ipl.index.category import load_head, save_head, softmax
from ipl.photos import decode_photo

SIDE, HUES, SATS, VALS = 64, 12, 3, 3
BORDER = 4  # pixels of the 64 px thumbnail's frame that sample the background
FOREGROUND_DELTA = 15.0  # CIE Lab distance from the background's colour that marks an item pixel
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


def item_weights(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel weights of a (SIDE*SIDE, 3) thumbnail: centre weight on the pixels that differ from
    the border's colour (the whole centre-weighted photo when almost none do)."""
    lab = srgb_to_lab(rgb)
    background = np.median(lab[_FRAME], axis=0)
    item = np.linalg.norm(lab - background, axis=1) > FOREGROUND_DELTA
    w = _W * item
    return w if w.sum() >= MIN_FOREGROUND * _W.sum() else _W


def colour_features(photo) -> np.ndarray:
    img = decode_photo(photo).convert("RGB").resize((SIDE, SIDE))
    weights = item_weights(np.asarray(img, dtype=np.float32).reshape(-1, 3))
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32).reshape(-1, 3) / 256.0
    h = np.minimum((hsv[:, 0] * HUES).astype(int), HUES - 1)
    s = np.minimum((hsv[:, 1] * SATS).astype(int), SATS - 1)
    v = np.minimum((hsv[:, 2] * VALS).astype(int), VALS - 1)
    hist = np.bincount((h * SATS + s) * VALS + v, weights=weights, minlength=HUES * SATS * VALS)
    return np.sqrt(hist / max(hist.sum(), 1e-12)).astype(np.float32)


def photos_features(photos: Sequence) -> np.ndarray:
    """The mean feature of a listing's photos (L2-normalised)."""
    f = np.mean([colour_features(p) for p in photos], axis=0)
    return f / max(float(np.linalg.norm(f)), 1e-12)


def save_colour_head(head: dict, out_dir: Path, key: str) -> None:
    """Write the head into a (staged) index version directory."""
    save_head(head, out_dir, None, HEAD_FILE, LABELS_FILE, key=key)


class ColourPredictor:
    """``predict(photos, k)``: the top-k colour values with probabilities."""

    def __init__(self, head: dict):
        self.key, self.classes = head["key"], list(head["classes"])
        self.weight, self.bias = head["weight"], head["bias"]

    @classmethod
    def load(cls, head_dir: Path) -> Optional["ColourPredictor"]:
        head = load_head(Path(head_dir), HEAD_FILE, LABELS_FILE)
        return cls(head) if head is not None else None

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(np.atleast_2d(features) @ self.weight.T + self.bias)

    def predict_features(self, features: np.ndarray, k: int = 3) -> list[list[dict]]:
        probs = self.probabilities(features)
        top = np.argsort(-probs, axis=1)[:, :k]
        return [[{"value": self.classes[j], "score": float(p[j])} for j in row] for row, p in zip(top, probs)]

    def predict(self, photos: Sequence, k: int = 3) -> list[dict]:
        return self.predict_features(photos_features(photos)[None, :], k)[0]
