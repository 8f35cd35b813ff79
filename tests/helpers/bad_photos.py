"""Hostile and broken photos, built byte by byte (shared by the intake unit tests and the
HTTP bad-input integration test)."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def jpeg(size=(64, 48), color=(200, 30, 30), exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    img = Image.new("RGB", size, color)
    if exif is not None:
        img.save(out, format="JPEG", exif=exif)
    else:
        img.save(out, format="JPEG")
    return out.getvalue()


def encoded(fmt: str, size=(64, 48), mode="RGB", **kw) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 120).save(out, format=fmt, **kw)
    return out.getvalue()


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = {1: "N", 2: (31.0, 14.0, 2.5), 3: "E", 4: (121.0, 28.0, 1.0)}
    exif[0x8825] = gps
    return exif.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    row = b"\x00" + b"\x00" * min(width, 64)
    idat = zlib.compress(row * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_zero_bomb(side: int = 12000) -> bytes:
    """A real PNG that inflates to side*side bytes of zeros (a few hundred KB compressed)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_text_bomb() -> bytes:
    """A small valid PNG with a zTXt chunk inflating past Pillow's text-chunk limit."""
    base = encoded("PNG", (32, 32), "L")
    bomb = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
    return base[:33] + _chunk(b"zTXt", bomb) + base[33:]


def gif_declaring(width: int, height: int) -> bytes:
    """A tiny GIF whose screen and frame declare ``width`` x ``height``."""
    data = bytearray(encoded("GIF", (16, 16), "L"))
    struct.pack_into("<HH", data, 6, width, height)  # logical screen
    i = data.index(b"\x2c")  # image descriptor
    struct.pack_into("<HH", data, i + 5, width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A tiny BMP whose header declares ``width`` x ``height``."""
    data = bytearray(encoded("BMP", (16, 16), "L"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def animated_gif(frames: int) -> bytes:
    imgs = [Image.new("L", (32, 32), i % 256) for i in range(frames)]
    out = io.BytesIO()
    imgs[0].save(out, format="GIF", save_all=True, append_images=imgs[1:], duration=10)
    return out.getvalue()


def bad_photos() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected error code)."""
    good = jpeg()
    png = encoded("PNG")
    return {
        "empty": (b"", "empty_photo"),
        "text": (b"hello, this is not a photo at all", "not_an_image"),
        "html": (b"<!doctype html><html><body>hi</body></html>", "not_an_image"),
        "json": (b'{"photo": "base64..."}', "not_an_image"),
        "random_bytes": (bytes(range(256)) * 4, "not_an_image"),
        "tiff": (encoded("TIFF"), "unsupported_image_format"),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "unsupported_image_format"),
        "jpeg_header_only": (good[:20], "truncated_image"),
        "jpeg_truncated": (good[: len(good) // 2], "truncated_image"),
        "png_truncated": (png[: len(png) - 30], "truncated_image"),
        "png_signature_only": (png[:8], "truncated_image"),
        "png_bad_crc": (png[:29] + b"\x00\x00\x00\x00" + png[33:], "corrupt_image"),
        "png_bomb_header": (png_declaring(40000, 40000), "decompression_bomb"),
        "png_bomb_pixels": (png_declaring(8000, 8000), "decompression_bomb"),
        "png_zero_bomb": (png_zero_bomb(), "decompression_bomb"),
        "png_text_bomb": (png_text_bomb(), "decompression_bomb"),
        "gif_bomb": (gif_declaring(8000, 8000), "decompression_bomb"),
        "bmp_bomb": (bmp_declaring(8000, 8000), "decompression_bomb"),
        "huge_side": (png_declaring(9000, 20), "image_too_large"),
        "tiny": (encoded("PNG", (4, 4)), "image_too_small"),
        "animated_gif_too_many_frames": (animated_gif(80), "too_many_frames"),
        "jpeg_garbage_body": (good[:200] + bytes(400), "corrupt_image"),
    }
