"""Configuration of ``ipl prepare`` (cleaning, extraction, template mining, instruction data)."""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from pydantic import Field

from ipl.catalog.library import LibraryConfig
from ipl.catalog.templates import TemplateConfig
from ipl.config import RayConfig, RunConfig, Strict
from ipl.data.clean import CleanConfig
from ipl.data.instructions import InstructionConfig
from ipl.data.listing_quality import QualityConfig
from ipl.data.read import InputConfig
from ipl.extract.llm import LLMConfig


class SampleConfig(Strict):
    """Stratified sampling by category (applied after the text filters, before the photo checks)."""

    per_category: Optional[int] = Field(None, ge=1, description="Target listings per category (null: keep all).")
    seed: int = Field(0, description="Seed of the (hash-based, deterministic) selection.")


class ConsistencyConfig(Strict):
    """Image-text consistency with open_clip (a Ray Data actor pool)."""

    enabled: bool = Field(True, description="Run the check (skipped automatically when there are no photos).")
    clip: Optional[str] = Field(None, description="CLIP directory or architecture (null: <run>/models/clip-base).")
    weights: Optional[str] = Field(None, description="Weights file when `clip` is an architecture name.")
    threshold: Optional[float] = Field(None, ge=-1, le=1, description="Drop rows whose photo-caption cosine is below "
                                       "this (null: the threshold ipl synth calibrated for the base CLIP on a "
                                       "separate corpus, stored in its open_clip_config.json; another CLIP needs "
                                       "an explicit value).")
    batch_size: int = Field(64, ge=1, description="Rows per batch.")
    concurrency: int = Field(1, ge=1, description="Actors (model replicas).")
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per actor (leave room for the tasks after it).")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor.")
    memory_mb: Optional[int] = Field(2304, ge=1, description="Memory reserved per actor for Ray's scheduling (the "
                                     "packaged CLIP and a batch of photos take up to ~1.7 GiB; null: none reserved).")
    feature_cache: bool = Field(False, description="Keep the locked image trunk's features per photo in "
                                "<run>/cache/image-features for ipl index (ipl.models.feature_cache; a CLIP whose "
                                "image tower is not a timm trunk + head runs whole and keeps nothing).")


class EvalConfig(Strict):
    """Measure extraction against ground-truth columns (e.g. Mercari's brand_name)."""

    ground_truth: dict[str, str] = Field(default_factory=dict, description="attribute key -> ground-truth column.")
    fraction: float = Field(0.5, gt=0, le=1, description="Share of rows (by id hash) held out for evaluation; "
                            "'column' library sources do not learn from them.")


class PrepareConfig(Strict):
    """``ipl prepare``: raw listings -> clean/, templates.yaml, instructions/."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    input: InputConfig = Field(default_factory=InputConfig, description="Raw listings.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text filters and near-duplicates.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Stratified sampling.")
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig, description="Image-text check.")
    library: LibraryConfig = Field(default_factory=LibraryConfig, description="Attribute keys and known values.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="LLM attribute extraction (optional).")
    templates: TemplateConfig = Field(default_factory=TemplateConfig, description="Template mining.")
    instructions: InstructionConfig = Field(default_factory=InstructionConfig, description="Instruction data.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="The listing quality score "
                                   "(Appendix C.2): operator weights per feature, <run>/quality/.")
    make_instructions: bool = Field(True, description="Write instructions/ (needs photos).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Extraction evaluation.")
    batch_size: int = Field(256, ge=1, description="Rows per batch of the text stages.")
    overwrite: bool = Field(False, description="Redo every part even if an up-to-date output exists.")
    preserve_order: bool = Field(True, description="Ray Data keeps the input's row order through every stage "
                                 "(DataContext.execution_options.preserve_order), so a re-run writes the same rows "
                                 "in the same order and ipl train reads them in the same order (false: the order in "
                                 "which blocks finish, a little faster on a large cluster, not reproducible).")

    def fingerprint(self, *parts: str) -> str:
        """Hash of the settings of the named parts (what decides whether an output is stale)."""
        data = self.model_dump(mode="json")
        keep = {k: data[k] for k in parts} if parts else {k: v for k, v in data.items()
                                                          if k not in ("ray", "overwrite", "preserve_order")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
