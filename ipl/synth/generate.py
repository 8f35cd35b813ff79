"""Deterministic listing factory: row ``i`` of a marketplace depends only on (seed, i).

``ListingFactory(cfg).table(start, stop)`` returns a ``pyarrow.Table`` of rows
``start..stop-1`` with the ground truth (:data:`SCHEMA`). Pure Python; the Ray Data
composer in :mod:`ipl.synth.pipeline` calls it once per shard.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pyarrow as pa

from ipl.synth import dirty
from ipl.synth.catalogue import SKU, Catalogue, Value
from ipl.synth.config import SynthConfig
from ipl.synth.render import render_photo, to_jpeg
from ipl.synth.text import write_listing

SCHEMA = pa.schema(
    [
        ("listing_id", pa.string()),
        ("sku_id", pa.string()),
        ("spu_id", pa.string()),
        ("category", pa.string()),
        ("language", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("attributes", pa.string()),  # JSON: template key -> value, in the listing's language
        ("mentioned", pa.string()),  # JSON: template keys the description states, in order
        ("condition", pa.string()),  # the condition grade (Catalogue.condition_of), in the listing's language
        ("price", pa.float64()),
        ("quality_score", pa.float64()),
        ("risk_flags", pa.list_(pa.string())),
        ("dirty_reason", pa.string()),  # null for clean rows
        ("photo_sku_id", pa.string()),  # the SKU the photos show (differs for image_text_mismatch)
        ("photos", pa.list_(pa.binary())),  # JPEG bytes
    ]
)

# independent random streams per row
_REASON, _CONTENT, _PHOTOS, _DIRTY = 0, 1, 2, 3


class ListingFactory:
    """Generates rows of the synthetic marketplace described by a :class:`SynthConfig`."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        c = cfg.catalogue
        self.catalogue = Catalogue.build(
            c.path, c.categories, c.brands_per_category, c.models_per_brand, c.colors_per_spu, c.variants_per_spu
        )
        self._reasons = [r for r in dirty.REASONS if getattr(cfg.dirty, r) > 0]
        self._cum = np.cumsum([getattr(cfg.dirty, r) for r in self._reasons])
        cats = list(self.catalogue.categories)
        self._skus_by_cat = {c: [s for s in self.catalogue.skus if s.category == c] for c in cats}
        self._cats = cats

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, i, stream])

    def reason(self, i: int) -> Optional[str]:
        """The dirty reason of row ``i`` (None when clean)."""
        u = self._rng(i, _REASON).random()
        k = int(np.searchsorted(self._cum, u, side="right"))
        reason = self._reasons[k] if k < len(self._reasons) else None
        if reason == "near_duplicate" and self._original_of(i) is None:
            return None
        return reason

    def _original_of(self, i: int) -> Optional[int]:
        """The earlier clean row that near-duplicate row ``i`` copies."""
        rng = self._rng(i, _DIRTY)
        for _ in range(8):
            if i == 0:
                return None
            j = int(rng.integers(max(0, i - 5000), i))
            u = self._rng(j, _REASON).random()
            k = int(np.searchsorted(self._cum, u, side="right"))
            if k >= len(self._reasons):  # clean
                return j
        return None

    def _content(self, i: int) -> dict:
        """SKU, listing attributes, text and price of row ``i`` before any dirt."""
        rng = self._rng(i, _CONTENT)
        cat = self._cats[int(rng.integers(len(self._cats)))]
        skus = self._skus_by_cat[cat]
        sku = skus[int(rng.integers(len(skus)))]
        category = self.catalogue.categories[cat]
        listing_attrs: dict[str, Value] = {
            key: values[int(rng.integers(len(values)))] for key, values in category.listing.items()
        }
        text = write_listing(self.catalogue, sku, listing_attrs, rng, self.cfg.language, self.cfg.mention_prob)
        wear = 1.0 - 0.1 * sum(
            list(category.listing[k]).index(v) for k, v in listing_attrs.items()
        ) / max(1, len(listing_attrs))
        price = round(category.base_price * sku.price_factor * wear * float(rng.uniform(0.85, 1.15)), 0)
        return {"sku": sku, "listing_attrs": listing_attrs, "text": text, "price": price}

    def row(self, i: int) -> dict:
        cfg = self.cfg
        reason = self.reason(i)
        source = self._original_of(i) if reason == "near_duplicate" else i
        content = self._content(source)
        sku: SKU = content["sku"]
        text = content["text"]
        language = cfg.language
        rng = self._rng(i, _DIRTY)
        description = dirty.apply_text(reason, text.description, rng, language) if reason else text.description
        price = content["price"]
        risk_flags = [dirty.RISK_FLAG[reason]] if reason in dirty.RISK_FLAG else []
        if reason == "risk_low_price":
            price = max(1.0, round(price * float(rng.uniform(0.01, 0.05)), 0))
        quality = float(rng.uniform(0.05, 0.35)) if reason == "low_quality" else float(rng.uniform(0.55, 1.0))
        photo_sku = sku
        if reason == "image_text_mismatch":
            others = [c for c in self._cats if c != sku.category] or self._cats
            other = self._skus_by_cat[others[int(rng.integers(len(others)))]]
            photo_sku = other[int(rng.integers(len(other)))]
        prng = self._rng(i, _PHOTOS)
        n_photos = int(prng.integers(cfg.photos_min, cfg.photos_max + 1))
        photos = [
            to_jpeg(render_photo(self.catalogue, photo_sku, prng, cfg.image_size), cfg.jpeg_quality)
            for _ in range(n_photos)
        ]
        category = self.catalogue.categories[sku.category]
        attrs = {**self.catalogue.sku_attributes(sku), **content["listing_attrs"]}
        attributes = {k: attrs[k].text(language) for k in category.template}
        grade = self.catalogue.condition_of(sku.category, content["listing_attrs"])
        return {
            "listing_id": f"L{i:09d}",
            "sku_id": sku.sku_id,
            "spu_id": sku.spu_id,
            "category": sku.category,
            "language": language,
            "title": text.title,
            "description": description,
            "attributes": json.dumps(attributes, ensure_ascii=False),
            "mentioned": json.dumps(text.mentioned),
            "condition": grade.text(language) if grade else None,
            "price": float(price),
            "quality_score": round(quality, 4),
            "risk_flags": risk_flags,
            "dirty_reason": reason,
            "photo_sku_id": photo_sku.sku_id,
            "photos": photos,
        }

    def table(self, start: int, stop: int) -> pa.Table:
        rows = [self.row(i) for i in range(start, stop)]
        return pa.Table.from_pylist(rows, schema=SCHEMA)
