"""Photo decoding shared by the stages: encoded bytes or a local path -> an RGB PIL image."""
from __future__ import annotations

import io

from PIL import Image


def decode_photo(data) -> Image.Image:
    if isinstance(data, Image.Image):
        return data.convert("RGB")
    if isinstance(data, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(data)))
    else:  # a local path
        img = Image.open(str(data))
    img.load()
    return img.convert("RGB")
