"""A photo-colour classifier: the ``photo`` basis of the evidence model for the colour key.

Image embeddings trained for identity say little about colour, and colour is in every
template. ``colour_features(image)`` is a joint HSV histogram (12 hues x 3 saturations x 3
values, square-rooted so it has unit L2 norm) of the item's pixels, counted with a centre
weight (the item sits in the middle of a listing photo). The item is what the background does
not reach: the background's colour is estimated from the photo's border (its median in CIE
Lab), and the background region is flooded from the border through pixels close to that colour
that are not on an edge (a Lab step between neighbours). So a white shirt on a white ground is
the item when its outline closes it off, instead of being thrown away with the ground while the
wearer's skin and jeans are counted as the item (the first version did that: real white
garments on catalogue photos were read as gold or grey). A photo where almost nothing is left
(a flat frame) falls back to the centre-weighted whole photo. It works the same on a drawn listing and on a real catalogue
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


def item_weights(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel weights of a (SIDE*SIDE, 3) thumbnail: centre weight on the item, the pixels the
    background flood from the border does not reach (the whole centre-weighted photo when almost
    nothing is left)."""
    lab = srgb_to_lab(rgb)
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
