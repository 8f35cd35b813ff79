"""Pillow renderer for synthetic product photos.

A photo shows a category-specific shape filled with the SKU's colour, the brand's logo mark
(a shape chosen by brand) and logo text, the model's stripe signature and model text. The
SKU's object is drawn once per process (cached); each photo then varies the background,
rotation, scale, position, lighting and noise. So photos of the same SKU look alike, the
same SPU shares shape, logo and stripes but not colour, and other SPUs differ.

``render_photo(catalogue, sku, rng, size)`` returns an RGB ``PIL.Image``;
``to_jpeg(image)`` encodes it.
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ipl.synth.catalogue import SKU, Catalogue

SUPERSAMPLE = 2


def _contrast(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (20, 20, 20) if lum > 140 else (245, 245, 245)


def _shade(rgb, factor: float):
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _body_box(shape: str, s: int) -> tuple[float, float, float, float]:
    """The region of the shape where the logo and stripes go (x0, y0, x1, y1)."""
    boxes = {
        "phone": (0.32, 0.14, 0.68, 0.86),
        "laptop": (0.2, 0.14, 0.8, 0.58),
        "shoe": (0.18, 0.38, 0.78, 0.66),
        "bag": (0.2, 0.38, 0.8, 0.82),
        "camera": (0.14, 0.32, 0.86, 0.76),
        "headphones": (0.16, 0.5, 0.84, 0.78),
        "watch": (0.3, 0.3, 0.7, 0.7),
        "jacket": (0.3, 0.2, 0.7, 0.86),
    }
    x0, y0, x1, y1 = boxes[shape]
    return x0 * s, y0 * s, x1 * s, y1 * s


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, s: int, fill, edge) -> None:
    w = max(2, s // 80)
    P = lambda pts: [(x * s, y * s) for x, y in pts]  # noqa: E731
    if shape == "phone":
        d.rounded_rectangle(P([(0.3, 0.1), (0.7, 0.9)]), radius=s * 0.06, fill=fill, outline=edge, width=w)
        d.rounded_rectangle(P([(0.34, 0.14), (0.46, 0.3)]), radius=s * 0.03, fill=_shade(fill, 0.6))
        d.ellipse(P([(0.36, 0.16), (0.42, 0.22)]), fill=(15, 15, 15))
    elif shape == "laptop":
        d.rounded_rectangle(P([(0.18, 0.12), (0.82, 0.6)]), radius=s * 0.02, fill=fill, outline=edge, width=w)
        d.polygon(P([(0.18, 0.6), (0.82, 0.6), (0.92, 0.74), (0.08, 0.74)]), fill=_shade(fill, 0.8), outline=edge)
    elif shape == "shoe":
        d.polygon(
            P([(0.1, 0.68), (0.12, 0.45), (0.3, 0.36), (0.45, 0.3), (0.55, 0.42), (0.8, 0.5), (0.9, 0.62), (0.9, 0.68)]),
            fill=fill,
            outline=edge,
        )
        d.rectangle(P([(0.1, 0.68), (0.9, 0.76)]), fill=(235, 235, 235), outline=edge)
    elif shape == "bag":
        d.arc(P([(0.32, 0.14), (0.68, 0.56)]), 180, 360, fill=edge, width=max(3, s // 30))
        d.polygon(P([(0.22, 0.35), (0.78, 0.35), (0.86, 0.85), (0.14, 0.85)]), fill=fill, outline=edge)
    elif shape == "camera":
        d.rounded_rectangle(P([(0.36, 0.2), (0.6, 0.32)]), radius=s * 0.02, fill=_shade(fill, 0.7))
        d.rounded_rectangle(P([(0.12, 0.3), (0.88, 0.78)]), radius=s * 0.05, fill=fill, outline=edge, width=w)
        d.ellipse(P([(0.36, 0.36), (0.64, 0.72)]), fill=(30, 30, 35), outline=edge, width=w)
        d.ellipse(P([(0.43, 0.46), (0.57, 0.62)]), fill=(70, 90, 120))
    elif shape == "headphones":
        d.arc(P([(0.2, 0.12), (0.8, 0.8)]), 180, 360, fill=fill, width=max(6, s // 14))
        d.rounded_rectangle(P([(0.12, 0.46), (0.34, 0.8)]), radius=s * 0.06, fill=fill, outline=edge, width=w)
        d.rounded_rectangle(P([(0.66, 0.46), (0.88, 0.8)]), radius=s * 0.06, fill=fill, outline=edge, width=w)
    elif shape == "watch":
        d.rectangle(P([(0.4, 0.05), (0.6, 0.95)]), fill=_shade(fill, 0.7), outline=edge)
        d.ellipse(P([(0.26, 0.26), (0.74, 0.74)]), fill=fill, outline=edge, width=w * 2)
        d.ellipse(P([(0.32, 0.32), (0.68, 0.68)]), fill=(240, 240, 235), outline=edge)
    elif shape == "jacket":
        d.polygon(
            P([(0.3, 0.15), (0.42, 0.12), (0.58, 0.12), (0.7, 0.15), (0.9, 0.5), (0.8, 0.56), (0.7, 0.4),
               (0.7, 0.88), (0.3, 0.88), (0.3, 0.4), (0.2, 0.56), (0.1, 0.5)]),
            fill=fill,
            outline=edge,
        )
        d.line(P([(0.5, 0.14), (0.5, 0.88)]), fill=edge, width=w)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _draw_mark(d: ImageDraw.ImageDraw, kind: int, cx: float, cy: float, r: float, color) -> None:
    """The brand's logo mark: circle, triangle, square, diamond, star-ish cross."""
    kind %= 5
    if kind == 0:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif kind == 1:
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
    elif kind == 2:
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif kind == 3:
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
    else:
        d.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=color)
        d.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=color)


@lru_cache(maxsize=1024)
def _object_layer(catalogue_id: int, sku: SKU, shape: str, rgb: tuple, size: int) -> Image.Image:
    """The SKU's object on a transparent canvas of ``size`` (drawn supersampled, cached per process)."""
    s = size * SUPERSAMPLE
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    edge = _shade(rgb, 0.55)
    _draw_shape(d, shape, s, fill=rgb + (255,), edge=edge + (255,))
    ink = _contrast(rgb) + (255,)
    x0, y0, x1, y1 = _body_box(shape, s)
    bw, bh = x1 - x0, y1 - y0
    # brand logo mark, top of the body
    _draw_mark(d, sku.brand_index, x0 + bw * 0.5, y0 + bh * 0.22, min(bw, bh) * 0.13, ink)
    # model signature: model_index + 1 stripes near the bottom of the body
    for k in range(sku.model_index + 1):
        yy = y0 + bh * (0.74 + 0.08 * k)
        d.rectangle([x0 + bw * 0.15, yy, x1 - bw * 0.15, yy + max(2, bh * 0.035)], fill=ink)
    font = _font(max(8, int(s * 0.07)))
    for text, frac in ((sku.brand.en.upper(), 0.42), (sku.model, 0.58)):
        tw = d.textlength(text, font=font)
        d.text((x0 + (bw - tw) / 2, y0 + bh * frac - s * 0.035), text, fill=ink, font=font)
    return layer.resize((size, size), Image.LANCZOS)


def render_photo(catalogue: Catalogue, sku: SKU, rng: np.random.Generator, size: int = 112) -> Image.Image:
    """One photo of ``sku`` with random background, pose, lighting and noise."""
    cat = catalogue.categories[sku.category]
    obj = _object_layer(id(catalogue), sku, cat.shape, catalogue.color_rgb(sku.color), size)
    # pose: scale, rotation, offset
    angle = float(rng.uniform(-14, 14))
    scale = float(rng.uniform(0.72, 1.0))
    new = max(8, int(size * scale))
    obj = obj.resize((new, new), Image.BILINEAR).rotate(angle, resample=Image.BILINEAR)
    # background: light random colour with a vertical gradient
    base = rng.integers(150, 250, size=3).astype(np.float32)
    grad = np.linspace(1.0, float(rng.uniform(0.75, 1.0)), size, dtype=np.float32)
    bg = Image.fromarray(np.broadcast_to(grad[:, None, None] * base, (size, size, 3)).astype(np.uint8), "RGB")
    off = size - new
    dx = int(rng.integers(0, off + 1)) if off > 0 else 0
    dy = int(rng.integers(0, off + 1)) if off > 0 else 0
    bg.paste(obj, (dx, dy), obj)
    # lighting (brightness, contrast) and sensor noise in one pass
    arr = np.asarray(bg, dtype=np.float32)
    brightness = float(rng.uniform(0.8, 1.15))
    contrast = float(rng.uniform(0.85, 1.15))
    mean = float(arr.mean())
    arr = ((arr - mean) * contrast + mean) * brightness
    sigma = float(rng.uniform(0, 6))
    arr += rng.standard_normal((size, size, 3), dtype=np.float32) * sigma
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def to_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
