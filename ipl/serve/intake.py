"""Photo intake: what a seller's bytes really are, whether they are safe to decode, and a
clean re-encoded copy.

``sniff_format(data)`` reads the magic bytes (the declared content type is ignored: a PNG
labelled ``image/jpeg`` is a PNG, an HTML page labelled ``image/png`` is not an image).
``clean_image(data, limits, n)`` checks size, format, dimensions and frame count from
the header *before* decoding, turns Pillow's decompression-bomb warning into an error,
decodes with the format's own decoder only, applies the EXIF orientation (a phone photo
taken upright comes out upright) and returns the RGB pixels at a bounded size: the one
decode of a draft (the SafetyGate passes the pixels on); EXIF (GPS position, camera serial)
does not survive. ``sanitize_photo`` is the same as a metadata-free JPEG. Every refusal is an
:class:`~ipl.serve.errors.ApiError` with a stable code naming the photo.
"""
from __future__ import annotations

import io
import warnings
from typing import Optional

from PIL import Image, ImageFile, ImageOps

from ipl.photos import count
from ipl.serve.config import SafetyConfig
from ipl.serve.errors import ApiError

PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}
# formats recognised only to name them in the error (never decoded)
_OTHER = {b"II*\x00": "tiff", b"MM\x00*": "tiff", b"\x00\x00\x01\x00": "ico", b"%PDF": "pdf", b"8BPS": "psd"}


def sniff_format(data: bytes) -> Optional[str]:
    """jpeg/png/gif/bmp/webp (or another known non-accepted kind such as tiff/heic/pdf); None if unknown."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "heic" if b"hei" in data[8:12] or b"mif1" in data[8:12] else "avif"
    return _OTHER.get(data[:4])


def check_photo_count(n: int, limits: SafetyConfig, how: str = "image files in the multipart field 'photos'") -> None:
    """no_photos / too_many_photos, checked where photos arrive (before any bytes travel on)."""
    if n == 0:
        raise ApiError("no_photos", f"no photos: send 1 to {limits.max_photos} {how}")
    if n > limits.max_photos:
        raise ApiError("too_many_photos", f"{n} photos; at most {limits.max_photos} per request")


def _describe_head(data: bytes) -> str:
    head = data[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"it starts with text {head.decode('ascii', 'replace')!r}"
    return f"it starts with bytes {head[:8].hex(' ')}"


def sanitize_photo(data: bytes, limits: SafetyConfig, n: int = 1) -> bytes:
    """The photo re-encoded as a bounded RGB JPEG without metadata, or ApiError naming photo ``n``."""
    out = io.BytesIO()
    clean_image(data, limits, n).save(out, format="JPEG", quality=90)  # no exif= argument: no metadata
    return out.getvalue()


def clean_image(data: bytes, limits: SafetyConfig, n: int = 1) -> Image.Image:
    """The photo decoded once (checked as in :func:`sanitize_photo`), upright and RGB, with the
    longest side at most ``limits.reencode_side``: the pixels the rest of the draft works on."""
    what = f"photo {n}"
    if not data:
        raise ApiError("empty_photo", f"{what} is empty (0 bytes)")
    if len(data) > limits.max_photo_mb * 2**20:
        raise ApiError("photo_too_large", f"{what} is {len(data) / 2**20:.1f} MB; the limit is {limits.max_photo_mb:g} MB")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError("not_an_image", f"{what} is not an image: {_describe_head(data)}")
    if fmt not in limits.formats or fmt not in PIL_FORMAT:
        raise ApiError("unsupported_image_format",
                       f"{what} is {fmt.upper()}; accepted formats: {', '.join(f.upper() for f in limits.formats)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=[PIL_FORMAT[fmt]])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ApiError("decompression_bomb", f"{what}: {exc}") from None
        except ValueError as exc:  # e.g. a PNG text chunk that decompresses past Pillow's limit
            code = "decompression_bomb" if "too large" in str(exc).lower() else "corrupt_image"
            raise ApiError(code, f"{what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the client's bad bytes
            reason = str(exc).split(" <_io.")[0]  # Pillow names the BytesIO object: noise for the client
            short = len(data) <= 64 or "truncated" in reason.lower()
            raise ApiError("truncated_image" if short else "corrupt_image",
                           f"{what}: the {fmt.upper()} header cannot be read ({reason})") from None
        w, h = img.size
        if max(w, h) > limits.max_side:
            raise ApiError("image_too_large", f"{what} is {w}x{h}; the longest side may be {limits.max_side} px")
        if w * h > limits.max_pixels:
            raise ApiError("decompression_bomb", f"{what} declares {w}x{h} = {w * h:,} pixels; the limit is "
                           f"{limits.max_pixels:,}")
        if min(w, h) < limits.min_side:
            raise ApiError("image_too_small", f"{what} is {w}x{h}; the shortest side must be at least "
                           f"{limits.min_side} px")
        frames = getattr(img, "n_frames", 1)
        if frames > limits.max_frames:
            raise ApiError("too_many_frames", f"{what} has {frames} frames; at most {limits.max_frames} are accepted")
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ApiError("decompression_bomb", f"{what}: {exc}") from None
        except OSError as exc:
            code = "truncated_image" if "truncated" in str(exc).lower() or "broken" in str(exc).lower() \
                else "corrupt_image"
            raise ApiError(code, f"{what}: the {fmt.upper()} data cannot be decoded ({exc})") from None
        except Exception as exc:  # noqa: BLE001
            code = "decompression_bomb" if "too large" in str(exc).lower() else "corrupt_image"
            raise ApiError(code, f"{what}: the {fmt.upper()} data cannot be decoded ({exc})") from None
        count("decoded")
        try:
            img = ImageOps.exif_transpose(img)  # the rotation the camera recorded, before EXIF is dropped
        except Exception:  # noqa: BLE001 - an unreadable EXIF block: keep the pixels as stored
            pass
    return _flatten(img, limits.reencode_side)


def _flatten(img: Image.Image, side: int) -> Image.Image:
    """RGB (transparency over white), the longest side at most ``side``."""
    if img.mode in ("RGBA", "LA", "P") and ("transparency" in img.info or img.mode != "P"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        img = bg
    else:
        img = img.convert("RGB")
    img.thumbnail((side, side))
    return img


def strict_pillow(max_pixels: int) -> None:
    """Process-wide Pillow settings of a serving replica: the bomb limit is ours and its warning an error."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
