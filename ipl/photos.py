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


# -- the VLM image policy (ipl.config.ImagePolicy) ---------------------------------------------------
VISION_FACTOR = 28  # Qwen2-VL: 14 px patches merged 2 x 2 -> one visual token per 28 x 28 px


def policy_size(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) a photo is resized to: Qwen2-VL's ``smart_resize`` rule (multiples of 28,
    aspect kept, pixels within the bounds), so the processor leaves the result as it is."""
    import math

    f = VISION_FACTOR
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"photo {width}x{height}: aspect ratio above 200")
    h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h, w


def fit_photo(photo, policy) -> Image.Image:
    """A photo (bytes, path, pixels or image) as the RGB image the VLM is given under ``policy``."""
    img = decode_photo(photo)
    h, w = policy_size(img.height, img.width, policy.min_pixels, policy.max_pixels)
    return img if (img.height, img.width) == (h, w) else img.resize((w, h), Image.BICUBIC)


def fit_photos(photos, policy) -> list[Image.Image]:
    """The first ``policy.max_photos`` photos, each :func:`fit_photo`."""
    return [fit_photo(p, policy) for p in list(photos)[: policy.max_photos]]


def visual_tokens(img: Image.Image) -> int:
    """Tokens a fitted photo takes in the prompt (one per 28 x 28 px, + vision start/end)."""
    return (img.height // VISION_FACTOR) * (img.width // VISION_FACTOR) + 2


def photos_that_fit(text_tokens: int, images: list, max_tokens: int) -> int:
    """How many of ``images`` (in order) a row keeps so that its ``text_tokens`` plus their
    visual tokens fit ``max_tokens``: photos go from the end first (0 when even the text alone
    does not fit: the caller then cuts the text). The one rule for training, serving and
    evaluation."""
    total = text_tokens
    for i, img in enumerate(images):
        total += visual_tokens(img)
        if total > max_tokens:
            return i
    return len(images)


def photos_within(tokenizer, text: str, images: list, max_tokens: int) -> int:
    """:func:`photos_that_fit` for a chat-template ``text`` holding one vision placeholder (3 tokens)
    per image. Tokenizes only when needed: a byte-level tokenizer never makes more tokens than
    the text has UTF-8 bytes, so a text whose bytes plus photos fit needs no counting (the common
    case, on every request and every training row)."""
    if not images:
        return 0
    placeholders = 3 * len(images)
    if len(text.encode("utf-8")) - placeholders + sum(visual_tokens(im) for im in images) <= max_tokens:
        return len(images)
    text_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - placeholders
    return photos_that_fit(text_tokens, images, max_tokens)

