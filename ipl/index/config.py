"""Configuration of ``ipl index``: encoder fine-tuning, embedding, sharded FAISS, category head.

``ipl index [--config jobs/configs/index_local.yaml] [key=value ...]`` or
``ray job submit --working-dir . -- python jobs/build_index.py --config ...``.
``action=rollback`` points ``current`` back at the previous version; ``action=verify``
loads the current version with every check and prints its manifest.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from ipl.caption.stage import CaptionConfig
from ipl.config import RayConfig, RunConfig, Strict
from ipl.models.feature_cache import RUN_CACHE as FEATURE_CACHE
from ipl.train.config import ScalingConfig

INDEX_TYPES = ("Flat", "IVF-Flat", "IVF-PQ", "HNSW")


class EncoderConfig(Strict):
    """The open_clip image encoder and its contrastive fine-tuning on the cleaned listings."""

    path: Optional[str] = Field(None, description="Base CLIP: a directory (open_clip_config.json + weights) or an "
                                "open_clip architecture name with `weights` (null: <run>/models/clip-base).")
    weights: Optional[str] = Field(None, description="Local weights file when `path` is an architecture name.")
    finetune: bool = Field(True, description="Fine-tune contrastively (photo <-> category + title; same-SKU photos "
                           "are positives) with Ray Train before embedding.")
    steps: int = Field(150, ge=1, description="Fine-tuning steps per worker.")
    batch_size: int = Field(96, ge=2, description="Contrastive batch per worker.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate (cosine schedule).")
    max_photos: int = Field(2, ge=1, description="Photos per listing used for fine-tuning.")
    image_weight: float = Field(0.0, ge=0, description="Weight of the photo <-> photo term (other photos of the same "
                                "SKU as positives) added to the photo <-> text loss.")
    similarity_weight: float = Field(10.0, ge=0, description="Weight of the similarity-preserving term (locked "
                                     "towers only): keeps the batch's photo-photo cosines in the joint space close "
                                     "to the pretrained trunk's, so the fine-tuned projection does not forget what "
                                     "transfers to real photos (README: real article-type kNN 0.74 -> 0.82 at 10 "
                                     "with the synthetic held-out SKU/SPU top-1 unchanged). 0: off.")
    family_weight: float = Field(0.0, ge=0, le=1, description="Weight of a photo's same-SPU, other-SKU captions as its "
                                 "targets beside its own SKU's (1 each): 0 makes them negatives, which pushes a product's "
                                 "colours apart and, for a product sold in a colour the index lacks, its siblings away.")
    scaling: ScalingConfig = Field(default_factory=lambda: ScalingConfig(num_workers=2, cpus_per_worker=0.5),
                                   description="Ray Train workers (gradients are averaged across them; leave CPU for the Ray Data read).")
    output: Optional[str] = Field(None, description="Fine-tuned CLIP directory (null: <run>/models/clip).")


class EmbedConfig(Strict):
    """The Ray Data actor-pool stage that embeds listing photos."""

    batch_size: int = Field(64, ge=1, description="Listings per batch.")
    concurrency: int = Field(1, ge=1, description="Embedding actors (model replicas).")
    num_cpus: float = Field(1, gt=0, description="CPUs per actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor (production: 1 or a fraction).")
    block_rows: int = Field(256, ge=1, description="Rows per Ray Data block fed to the actors (streaming "
                            "repartition: a single large Parquet file would otherwise keep all but one actor idle).")
    photos_per_listing: int = Field(3, ge=1, description="A listing's vector is the normalised mean of its first N "
                                    "photos.")
    keep: bool = Field(True, description="Keep the vectors in <index>/.embeddings/<key>/ after a build (about "
                       "4 bytes x (dimension + 48) per listing): a rebuild with other index settings, or a failed "
                       "build's re-run, reads them instead of embedding again. false: deleted after each build.")


class FaissConfig(Strict):
    """The sharded FAISS index (cosine = inner product on L2-normalised vectors)."""

    type: Literal["Flat", "IVF-Flat", "IVF-PQ", "HNSW"] = Field("IVF-Flat", description="Index type.")
    shards: int = Field(2, ge=1, description="Shards, each built by its own Ray task and searched in parallel.")
    nlist: Optional[int] = Field(None, ge=1, description="IVF lists (null: about 4*sqrt(n), at most n/39).")
    nprobe: int = Field(16, ge=1, description="IVF lists searched per query.")
    pq_m: int = Field(16, ge=1, description="IVF-PQ sub-quantizers (must divide the dimension).")
    pq_bits: int = Field(8, ge=1, le=16, description="IVF-PQ bits per sub-quantizer code.")
    hnsw_m: int = Field(32, ge=4, description="HNSW neighbours per node.")
    ef_construction: int = Field(80, ge=8, description="HNSW efConstruction.")
    ef_search: int = Field(64, ge=1, description="HNSW efSearch.")
    train_sample: int = Field(100_000, ge=100, description="Vectors sampled to train the coarse quantizer / PQ once.")
    shard_cpus: float = Field(1, gt=0, description="CPUs per shard-building Ray task.")
    gpu: bool = Field(True, description="Use FAISS's GPU build where it and a GPU are present (IVF k-means on all "
                      "GPUs of the training task); the CPU build or no GPU: the same index on the CPU.")
    train_num_gpus: float = Field(0, ge=0, description="GPUs of the Ray task that trains the coarse quantizer (0: "
                                  "in the job's driver, on its CPU).")


class CategoryConfig(Strict):
    """The category predictor: a linear head on image embeddings + a zero-shot fallback."""

    epochs: int = Field(60, ge=1, description="Passes over the training embeddings.")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    top_k: int = Field(3, ge=1, description="Categories returned per photo.")
    prompt: str = Field("a photo of {category}", description="Zero-shot prompt ({category} is replaced).")
    crossfit_calibration: bool = Field(True, description="The evidence calibration (the category tier and every "
                                       "tier that needs the category) reads each held-out photo's category from a "
                                       "head fitted without its SKU (two SKU groups), as a new product variant "
                                       "meets the served head; false: from the served head, which learned the SKU.")


class EvalConfig(Strict):
    """Held-out evaluation: listings kept out of the index whose SKUs are in it."""

    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="Listings held out of the index and the category "
                                    "head (only of SKUs with another listing in the index).")
    seed: int = Field(0, description="Seed of the held-out choice.")
    untrained_split: Optional[str] = Field("validation", description="Listings of the SKUs in this split of the "
                                           "run's instruction data (the SKUs the VLM never trained on, which "
                                           "`ipl eval` drafts for) stay out of every model the index trains (the "
                                           "encoder's fine-tuning, the category head, the photo-colour head) while "
                                           "staying in the index: the evaluation's photos are then new to every "
                                           "model, as a seller's photos are. null, or no such split: none.")
    instructions: Optional[str] = Field(None, description="Instruction data with that split (null: "
                                        "<run>/instructions from ipl prepare).")
    same_product_dir: Optional[str] = Field(None, description="Folder of <product>/*.jpg groups (e.g. "
                                            "../shared/realdata/abo): rank each photo's same-product photos.")


class EvidenceConfig(Strict):
    """Calibration of the evidence model on the held-out queries (:mod:`ipl.evidence.fit`)."""

    target_precision: float = Field(0.95, gt=0, le=1, description="Every tier (identical product, category, each "
                                    "basis x key level) states a value only from the score where its held-out "
                                    "precision reaches this; a tier that never does is disabled.")
    product_target_precision: Optional[float] = Field(
        0.96, gt=0, le=1, description="The target of the product-level value tiers (brand, model: the item's "
        "identity; a seller forgives 'please confirm the colour', not a wrong brand or model). null: "
        "target_precision. How 0.96 was measured: docs/evaluation.md.")
    min_support: int = Field(20, ge=1, description="Held-out candidates a tier needs at or above its threshold.")
    k: int = Field(8, ge=1, le=100, description="Hits per query the evidence reads (serving reads the same number: "
                   "retrieval.k).")
    tau: float = Field(0.05, gt=0, description="Similarity temperature of the agreement weights.")
    alpha: float = Field(1.0, ge=0, description="Pseudo-count of the agreement score (one listing alone scores at "
                         "most 1/(1+alpha)).")
    score_search: bool = Field(True, description="Each stated retrieval value tier chooses its agreement score "
                               "(tau, alpha, and the similarity its weights are measured from) from a small grid by "
                               "cross-fitted recall at the target precision on the held-out queries (false: tau and "
                               "alpha as given, weights from the draft's best similarity).")
    key_min_candidates: int = Field(100, ge=0, description="A key gets value tiers of its own (e.g. "
                                    "similar:product:brand beside similar:product) when the held-out queries give at "
                                    "least this many candidates of it; rarer keys share their level's tier (0: level "
                                    "tiers only).")
    ood_quantile: float = Field(0.01, ge=0, lt=1, description="In-domain floor: this quantile of the held-out "
                                "queries' best similarity; photos below it state no product-level value.")
    colour_key: Optional[str] = Field("Color", description="Attribute the photo-colour head predicts (trained on the "
                                      "indexed listings' values of it; null: no colour head).")
    product_heads: bool = Field(True, description="Fit a product head per category and product-level key (brand, "
                                "model) on the listing embeddings: the photo:product tiers (ipl.index.product), "
                                "calibrated on predictions of heads fitted without the query's SKU.")
    templates: Optional[str] = Field(None, description="templates.yaml with the key levels (null: "
                                     "<run>/templates.yaml; missing: the default levels).")

    @property
    def level_targets(self) -> dict[str, float]:
        """Key level -> the target of its value tiers where it is not ``target_precision``."""
        return {} if self.product_target_precision is None else {"product": self.product_target_precision}


class IndexConfig(Strict):
    """``ipl index``: <run>/clean/listings + a CLIP -> <run>/index/<version> + <run>/models/{clip,category}."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    action: Literal["build", "rollback", "verify"] = Field("build", description="build a new version; roll back "
                                                          "to the previous one; verify the current one.")
    listings: Optional[str] = Field(None, description="Cleaned listings (null: <run>/clean/listings).")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Image encoder.")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding stage.")
    feature_cache: bool = Field(False, description="Read and keep the locked image trunk's features per photo in "
                                "<run>/cache/image-features (ipl.models.feature_cache; ipl prepare's "
                                "consistency.feature_cache fills it): the fine-tuning and the embeddings then run "
                                "only the projection for a photo seen before. Results are the same either way.")
    faiss: FaissConfig = Field(default_factory=FaissConfig, description="Index.")
    identical_threshold: Optional[float] = Field(None, ge=-1, le=1, description="Cosine similarity from which a hit "
                                                 "is the identical product (null: calibrated on the held-out).")
    category: CategoryConfig = Field(default_factory=CategoryConfig, description="Category predictor.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence calibration.")
    caption: CaptionConfig = Field(default_factory=CaptionConfig, description="CASLIE captions: offline captions of "
                                   "the listings, the text index, caption quality evaluation and the caption "
                                   "evidence tiers (needs the fine-tuned VLM of ipl train).")
    rebuild: bool = Field(False, description="Build a new version even when the current one was built from the same "
                          "listings, encoder and settings (otherwise it is reused).")
    keep_versions: int = Field(2, ge=2, description="Index versions kept (current + previous for rollback, ...).")
    output: Optional[str] = Field(None, description="Index root (null: <run>/index).")

    @model_validator(mode="after")
    def _pq(self):
        if self.faiss.type == "IVF-PQ" and self.faiss.pq_bits > 8 and self.faiss.pq_m > 64:
            raise ValueError("faiss: pq_bits > 8 with pq_m > 64 makes codes larger than a flat index")
        return self

    @property
    def listings_dir(self) -> Path:
        return Path(self.listings) if self.listings else self.run.dir / "clean" / "listings"

    @property
    def base_clip(self) -> str:
        return self.encoder.path or str(self.run.dir / "models" / "clip-base")

    @property
    def feature_cache_dir(self) -> Optional[str]:
        return str((self.run.dir / FEATURE_CACHE).resolve()) if self.feature_cache else None

    @property
    def instructions_dir(self) -> Path:
        return Path(self.eval.instructions) if self.eval.instructions else self.run.dir / "instructions"

    @property
    def clip_dir(self) -> Path:
        return Path(self.encoder.output) if self.encoder.output else self.run.dir / "models" / "clip"

    @property
    def category_dir(self) -> Path:
        return self.run.dir / "models" / "category"

    @property
    def index_root(self) -> Path:
        return Path(self.output) if self.output else self.run.dir / "index"

    def encoder_key(self, untrained: Sequence[str] = ()) -> str:
        """What the fine-tuned encoder depends on (a re-run with the same key reuses it); ``untrained``:
        the listings kept out of its training besides the held-out ones."""
        blob = json.dumps({"base": self.base_clip, "weights": self.encoder.weights,
                           "enc": self.encoder.model_dump(exclude={"output"}),
                           "listings": str(self.listings_dir), "eval": self.eval.model_dump(exclude={"same_product_dir"}),
                           **({"untrained": ids_digest(untrained)} if untrained else {})},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ids_digest(ids: Sequence[str]) -> str:
    """A short digest of a set of listing ids (order-free)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
