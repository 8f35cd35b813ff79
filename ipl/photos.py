"""Photo decoding shared by the stages: encoded bytes, a local path or pixels -> an RGB PIL image.

``COUNTS`` counts, per process, the photos decoded from encoded bytes (``decoded``) and the
images passed through a CLIP image tower (``encoded``, counted by :mod:`ipl.models.clip`): a
serving replica reports its own in ``/v1/stats``, which is how a test asserts that a draft
decodes and embeds each photo once. Wrapping pixels (a numpy array or an image) is not a decode.
"""
from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

COUNTS = {"decoded": 0, "encoded": 0}
_LOCK = threading.Lock()


def count(kind: str, n: int = 1) -> None:
    with _LOCK:
        COUNTS[kind] += n


def counts() -> dict:
    with _LOCK:
        return dict(COUNTS)


def counts_since(base: dict) -> dict:
    """Decodes and encoder passes of this process since ``base`` (an earlier ``counts()``)."""
    now = counts()
    return {k: now[k] - base.get(k, 0) for k in now}


def decode_photo(data) -> Image.Image:
    if isinstance(data, Image.Image):
        return data.convert("RGB")
    if isinstance(data, np.ndarray):  # pixels decoded upstream (uint8, H x W x 3)
        return Image.fromarray(np.ascontiguousarray(data, dtype=np.uint8)).convert("RGB")
    if isinstance(data, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(data)))
    else:  # a local path
        img = Image.open(str(data))
    img.load()
    count("decoded")
    return img.convert("RGB")
