"""The listing quality score (paper Appendix C.2): a linear, operator-weighted score of a listing.

The paper scores listings with "a linear weighted score over 11 features -- category accuracy,
attribute filling rate, description fluency, images, price, ..." whose weights operators set.
:data:`FEATURES` are this project's 11, each in [0, 1] (None when the listing does not carry
what it needs, e.g. no image-text check ran: the score is then the weighted mean of the features
that are there, so listings with and without photos stay comparable on what they share).
``QualityConfig.weights`` are the operators' weights (YAML: ``quality.weights`` of the prepare
config); an unknown feature name is refused when the config is loaded.

``ipl prepare`` scores every cleaned listing (``<run>/quality/``: ``listing_id``,
``listing_quality`` and each feature; ``summary.json`` with the mean, quantiles and the feature
means per category), and ``ipl feedback report`` scores the listings sellers published from a
draft on the features their text and confirmed values carry, beside the cleaned listings' score
on the same features.
"""
from __future__ import annotations

import io
import re
from typing import Optional

from pydantic import Field, model_validator

from ipl.config import Strict

FEATURES = {
    "category_present": "the listing names a category",
    "category_consistent": "its photos passed the image-text check against '<category>: <title>' (None: no check)",
    "attribute_fill_rate": "share of its category template's keys it states",
    "description_length": "description words / target_words (capped at 1)",
    "description_fluency": "type-token ratio of the first 100 words / 0.5 (capped at 1): repetition and filler "
                           "lower it; under 3 words scores 0",
    "photo_count": "photos / target_photos (capped at 1)",
    "photo_resolution": "mean over photos of shorter side / min_photo_side (capped at 1)",
    "price_present": "a positive price",
    "title_present": "a title of at least 2 words",
    "condition_stated": "a condition is stated (an extracted key naming condition)",
    "contact_free": "no contact details in the text (the PII detectors of the cleaning stage)",
}

DEFAULT_WEIGHTS = {"category_present": 1.0, "category_consistent": 1.0, "attribute_fill_rate": 2.0,
                   "description_length": 1.0, "description_fluency": 1.0, "photo_count": 1.0,
                   "photo_resolution": 0.5, "price_present": 1.0, "title_present": 0.5, "condition_stated": 0.5,
                   "contact_free": 0.5}

_WORD = re.compile(r"[\u3400-\u9fff]|[^\W_]+", re.UNICODE)


class QualityConfig(Strict):
    """``quality:`` of the prepare config: the listing quality score's weights and targets."""

    enabled: bool = Field(True, description="Score every cleaned listing (<run>/quality/).")
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS),
                                      description="Operator weight per feature (names: ipl.data.listing_quality."
                                      "FEATURES); a feature left out weighs 0.")
    target_words: int = Field(40, ge=1, description="Description words that score a full description_length.")
    target_photos: int = Field(3, ge=1, description="Photos that score a full photo_count.")
    min_photo_side: int = Field(512, ge=1, description="Shorter photo side (px) that scores a full photo_resolution.")

    @model_validator(mode="after")
    def _known(self):
        unknown = sorted(set(self.weights) - set(FEATURES))
        if unknown:
            raise ValueError(f"quality.weights: unknown features {unknown} (known: {sorted(FEATURES)})")
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise ValueError(f"quality.weights: negative weights {bad}")
        if not any(v > 0 for v in self.weights.values()):
            raise ValueError("quality.weights: at least one weight must be positive")
        return self


def words(text: Optional[str]) -> list[str]:
    return _WORD.findall((text or "").lower())


def fluency(text: Optional[str]) -> float:
    w = words(text)[:100]
    if len(w) < 3:
        return 0.0
    return min(1.0, (len(set(w)) / len(w)) / 0.5)


def _photo_sides(photos) -> list[int]:
    from PIL import Image

    sides = []
    for p in ([] if photos is None else list(photos)):
        try:
            with Image.open(io.BytesIO(bytes(p)) if isinstance(p, (bytes, bytearray, memoryview)) else p) as im:
                sides.append(min(im.size))  # the header only: no decode
        except Exception:  # noqa: BLE001 - an unreadable photo scores 0
            sides.append(0)
    return sides


def listing_features(row: dict, template: Optional[list[str]], cfg: QualityConfig) -> dict[str, Optional[float]]:
    """The features of one listing (a cleaned row: category, title, description, price, photos,
    extracted, clip_score; or the text-only fields of a published listing)."""
    from ipl.runtime import json_object
    from ipl.text.pii import find_pii

    extracted = json_object(row.get("extracted"))
    stated = {k.lower() for k, v in extracted.items() if v not in (None, "")}
    text = row.get("description") or ""
    f: dict[str, Optional[float]] = {}
    f["category_present"] = 1.0 if (row.get("category") or "").strip() else 0.0
    score = row.get("clip_score")
    f["category_consistent"] = None if score is None or score != score else 1.0  # kept rows passed the check
    f["attribute_fill_rate"] = (sum(k.lower() in stated for k in template) / len(template)) if template else None
    f["description_length"] = min(1.0, len(words(text)) / cfg.target_words)
    f["description_fluency"] = fluency(text)
    photos = row.get("photos")
    if photos is None:
        f["photo_count"] = f["photo_resolution"] = None
    else:
        sides = _photo_sides(photos)
        f["photo_count"] = min(1.0, len(sides) / cfg.target_photos)
        f["photo_resolution"] = (sum(min(1.0, s / cfg.min_photo_side) for s in sides) / len(sides)) if sides else 0.0
    price = row.get("price")
    f["price_present"] = None if "price" not in row else (1.0 if price is not None and price == price and price > 0
                                                           else 0.0)
    f["title_present"] = None if "title" not in row else (1.0 if len(words(row.get("title"))) >= 2 else 0.0)
    f["condition_stated"] = 1.0 if any("condition" in k for k in stated) else 0.0
    f["contact_free"] = 0.0 if find_pii(text + " " + (row.get("title") or "")) else 1.0
    return f


def quality_score(features: dict[str, Optional[float]], weights: dict[str, float],
                  only: Optional[set] = None) -> Optional[float]:
    """The weighted mean of the features present (restricted to ``only`` when given); None when no
    weighted feature is present."""
    num = den = 0.0
    for name, w in weights.items():
        v = features.get(name)
        if w <= 0 or v is None or (only is not None and name not in only):
            continue
        num += w * v
        den += w
    return round(num / den, 4) if den else None


def score_batch(batch: dict, templates: dict, cfg: dict) -> dict:
    """Ray Data batch function: the cleaned listings in, their scores and features out."""
    qc = QualityConfig(**cfg)
    n = len(batch["listing_id"])
    cols = [c for c in ("category", "title", "description", "price", "photos", "extracted", "clip_score")
            if c in batch]
    out: dict = {"listing_id": [str(x) for x in batch["listing_id"]], "category": [], "listing_quality": []}
    for name in FEATURES:
        out[name] = []
    for i in range(n):
        row = {c: batch[c][i] for c in cols}
        for c in ("price", "clip_score"):
            if c in row and row[c] is not None:
                row[c] = float(row[c])
        feats = listing_features(row, templates.get(str(row.get("category"))), qc)
        out["category"].append(str(row.get("category") or ""))
        out["listing_quality"].append(quality_score(feats, qc.weights))
        for name in FEATURES:
            out[name].append(feats[name])
    return out
