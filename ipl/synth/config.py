"""Configuration of ``ipl synth`` (the synthetic marketplace and the tiny local models)."""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import Field, model_validator

from ipl.config import RayConfig, RunConfig, Strict
from ipl.models.config import TinyModelsConfig
from ipl.synth.dirty import REASONS

# The generated columns' version (ipl.synth.generate.SCHEMA): bump it when a column is added or changes
# meaning, so an old run's raw/ is not silently reused without it. 2: the `condition` grade.
SCHEMA_VERSION = 2


class CatalogueConfig(Strict):
    """Which part of the catalogue to sell, and how many SPUs/SKUs it has."""

    path: Optional[str] = Field(None, description="Catalogue YAML (null: the one shipped in ipl/synth).")
    categories: Optional[list[str]] = Field(None, description="Categories to use (null: all).")
    brands_per_category: int = Field(3, ge=1, le=20, description="Brands per category.")
    models_per_brand: int = Field(3, ge=1, le=20, description="Models (SPUs) per brand.")
    colors_per_spu: int = Field(3, ge=1, le=20, description="Colours each SPU comes in.")
    variants_per_spu: int = Field(2, ge=1, le=20, description="Size-like variants (storage, size...) per SPU.")


class DirtyRates(Strict):
    """Share of rows injected with each dirty reason (one reason per row at most)."""

    low_quality: float = Field(0.02, ge=0, le=1, description="Low platform quality score.")
    risk_traffic: float = Field(0.02, ge=0, le=1, description="Traffic to other platforms (risk flag).")
    risk_low_price: float = Field(0.02, ge=0, le=1, description="Suspiciously low price (risk flag).")
    risk_fraud: float = Field(0.02, ge=0, le=1, description="Fraud wording (risk flag).")
    privacy_phone: float = Field(0.02, ge=0, le=1, description="Phone number in the text.")
    privacy_wechat: float = Field(0.02, ge=0, le=1, description="WeChat/VX id in the text.")
    privacy_email: float = Field(0.02, ge=0, le=1, description="E-mail address in the text.")
    privacy_url: float = Field(0.02, ge=0, le=1, description="URL in the text.")
    too_short: float = Field(0.02, ge=0, le=1, description="Description too short.")
    too_long: float = Field(0.02, ge=0, le=1, description="Description too long.")
    special_chars: float = Field(0.02, ge=0, le=1, description="Special-character spam.")
    image_text_mismatch: float = Field(0.02, ge=0, le=1, description="Photo of another category.")
    near_duplicate: float = Field(0.02, ge=0, le=1, description="Near-copy of an earlier listing's text.")

    @model_validator(mode="after")
    def _total(self):
        total = sum(getattr(self, r) for r in REASONS)
        if total > 0.95:
            raise ValueError(f"dirty rates add up to {total:.2f}; they must leave clean rows (<= 0.95)")
        return self


class SynthConfig(Strict):
    """``ipl synth``: write ``<run>/raw/*.parquet`` and build the tiny local models."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    seed: int = Field(0, description="Seed; the same seed and config give the same rows.")
    rows: int = Field(2000, ge=1, description="Number of listings to generate.")
    shard_rows: int = Field(1000, ge=1, description="Rows per Parquet shard (the unit of parallelism and resume).")
    language: Literal["en", "zh"] = Field("en", description="Language of the listing text.")
    photos_min: int = Field(1, ge=1, le=9, description="Fewest photos per listing.")
    photos_max: int = Field(2, ge=1, le=9, description="Most photos per listing.")
    image_size: int = Field(112, ge=32, le=1024, description="Photo side in pixels.")
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the photos.")
    mention_prob: float = Field(0.85, ge=0, le=1, description="Chance a seller mentions each non-brand/model attribute.")
    catalogue: CatalogueConfig = Field(default_factory=CatalogueConfig, description="Catalogue sizing.")
    dirty: DirtyRates = Field(default_factory=DirtyRates, description="Dirty-row rates.")
    models: TinyModelsConfig = Field(default_factory=TinyModelsConfig, description="Tiny local models to build.")
    overwrite: bool = Field(False, description="Replace an existing raw/ written with a different config.")

    @model_validator(mode="after")
    def _photos(self):
        if self.photos_max < self.photos_min:
            raise ValueError(f"photos_max ({self.photos_max}) is below photos_min ({self.photos_min})")
        return self

    def data_record(self) -> dict:
        """Every field that changes the generated rows, and the version of their columns."""
        return {**self.model_dump(mode="json", exclude={"run", "ray", "models", "overwrite"}),
                "schema_version": SCHEMA_VERSION}

    def data_fingerprint(self) -> str:
        """Hash of :meth:`data_record`."""
        keep = self.data_record()
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
