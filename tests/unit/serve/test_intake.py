"""Photo intake: format sniffing, limits checked before decoding, bombs, re-encoding without EXIF."""
import io

import pytest
from PIL import Image

from bad_photos import bad_photos, encoded, gps_exif, jpeg
from ipl.serve.config import SafetyConfig
from ipl.serve.errors import CODES, ApiError
from ipl.serve.intake import sanitize_photo, sniff_format

CASES = bad_photos()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_photo_is_refused_with_its_code(name):
    data, code = CASES[name]
    with pytest.raises(ApiError) as err:
        sanitize_photo(data, SafetyConfig(), 3)
    assert err.value.code == code, err.value.message
    assert 400 <= err.value.status < 500 and err.value.status == CODES[code]
    assert "photo 3" in err.value.message and "<_io." not in err.value.message


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"),
                                      ("WEBP", "RGB")])
def test_good_formats_become_bounded_jpeg(fmt, mode):
    out = sanitize_photo(encoded(fmt, (300, 200), mode), SafetyConfig(reencode_side=128))
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) == 128


def test_sniffing_ignores_names_and_reads_bytes():
    assert sniff_format(jpeg()) == "jpeg"
    assert sniff_format(encoded("PNG")) == "png"
    assert sniff_format(encoded("WEBP")) == "webp"
    assert sniff_format(b"GIF89a" + bytes(20)) == "gif"
    assert sniff_format(b"not an image") is None


def test_exif_and_gps_do_not_survive():
    original = jpeg(exif=gps_exif())
    assert Image.open(io.BytesIO(original)).getexif().get(0x8825) is not None  # the upload carries GPS
    clean = Image.open(io.BytesIO(sanitize_photo(original, SafetyConfig())))
    assert not clean.getexif() and b"Exif" not in sanitize_photo(original, SafetyConfig())


def test_format_allow_list_and_size_limits_come_from_config():
    with pytest.raises(ApiError) as err:
        sanitize_photo(encoded("PNG"), SafetyConfig(formats=["jpeg"]))
    assert err.value.code == "unsupported_image_format"
    with pytest.raises(ApiError) as err:
        sanitize_photo(jpeg((400, 400)), SafetyConfig(max_photo_mb=0.0001))
    assert err.value.code == "photo_too_large" and err.value.status == 413
    with pytest.raises(ApiError) as err:
        sanitize_photo(jpeg((400, 300)), SafetyConfig(max_pixels=100_000))
    assert err.value.code == "decompression_bomb"
    assert sanitize_photo(jpeg((400, 200)), SafetyConfig(max_pixels=100_000))


def rotated_phone_photo(orientation: int = 6) -> bytes:
    """A JPEG stored sideways with the EXIF orientation a phone writes: stored 80x40, red on the
    left and blue on the right; orientation 6 means 'rotate 90 degrees clockwise to view', so the
    upright photo is 40x80 with red on top."""
    img = Image.new("RGB", (80, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_exif_orientation_is_applied_before_exif_is_dropped():
    limits = SafetyConfig(min_side=32)
    upright = Image.open(io.BytesIO(sanitize_photo(rotated_phone_photo(6), limits)))
    assert upright.size == (40, 80)
    top, bottom = upright.getpixel((20, 10)), upright.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 60, top  # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert not upright.getexif()  # and no EXIF (with its orientation) left to apply twice
    plain = Image.open(io.BytesIO(sanitize_photo(rotated_phone_photo(1), limits)))
    assert plain.size == (80, 40)  # orientation 1 (upright as stored) is left alone
