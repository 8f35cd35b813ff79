"""Configuration of ``ipl train`` (Ray Train + DeepSpeed ZeRO-1 fine-tuning of the VLM).

The DeepSpeed section is DeepSpeed's own JSON config, written in the job's YAML. The keys
that the rest of this config already decides (batch sizes, accumulation, clipping, precision)
are filled in from it and may not be set there twice: :meth:`TrainConfig.deepspeed_config`
returns the merged dict every worker passes to ``deepspeed.initialize``.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from ipl.config import ImagePolicy, RayConfig, RunConfig, Strict, refuse_keys

DESCRIPTION_TASKS = ("desc_image", "desc_template", "desc_reference")
ALL_TASKS = (*DESCRIPTION_TASKS, "category", "extraction", "caption", "tagging", "condition")
# DeepSpeed keys derived from this config (set them through `optim`/`precision` instead).
DERIVED_DS_KEYS = {
    "train_batch_size": "optim.micro_batch_size x optim.grad_accum x scaling.num_workers",
    "train_micro_batch_size_per_gpu": "optim.micro_batch_size",
    "gradient_accumulation_steps": "optim.grad_accum",
    "gradient_clipping": "optim.grad_clip",
    "bf16": "precision",
    "fp16": "precision",
    "optimizer": "optim (a torch AdamW is passed to deepspeed.initialize)",
    "scheduler": "optim (cosine with warmup, passed to deepspeed.initialize)",
}


class ModelConfig(Strict):
    """The checkpoint fine-tuned (a save_pretrained directory of the Qwen2-VL family)."""

    path: Optional[str] = Field(None, description="Base VLM directory (null: <run>/models/vlm-base from ipl synth).")
    freeze_vision: bool = Field(True, description="Freeze the vision encoder (the merger/adapter still trains).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory (7B on GPUs).")
    params_b: Optional[float] = Field(None, gt=0, description="Parameters in billions, for the GPU memory check "
                                      "(null: counted from the checkpoint's safetensors when it is on this machine).")
    activation_gib: float = Field(4.0, ge=0, description="GPU memory per worker reserved for activations in the "
                                  "memory check (with gradient checkpointing; more without).")


class DataConfig(Strict):
    """The instruction data of ``ipl prepare``, streamed through Ray Data."""

    instructions: Optional[str] = Field(None, description="Instructions directory (null: <run>/instructions).")
    tasks: list[str] = Field(default_factory=lambda: list(ALL_TASKS), description="Tasks trained on.")
    fraction: float = Field(1.0, gt=0, le=1, description="Share of the training rows used (by each row's `draw`, so "
                            "a smaller share is inside a larger one; the validation split is always whole): the "
                            "data-size curve (ipl curve).")
    max_length: int = Field(1024, ge=32, description="Tokens per sample; longer answers are cut at the end.")
    shuffle_buffer: int = Field(256, ge=0, description="Rows of Ray Data's local shuffle buffer (0: no shuffle).")
    group_by_length: int = Field(1, ge=0, description="Micro-batches drawn together from the shuffled stream and "
                                 "regrouped by length (HF's group_by_length: rows of similar length share a "
                                 "micro-batch, so less padding is computed; the ranks take the groups' micro-batches "
                                 "in one shared order, so a step's micro-batches are of similar length on every rank). "
                                 "0 or 1: off (the default: on the demo, 4 trained 1.18x as fast but ended at "
                                 "validation loss 0.466 against 0.442-0.454; docs/training.md).")
    preserve_order: bool = Field(True, description="Ray Data keeps the blocks' order into the workers (with the "
                                 "seeded shuffle buffer a re-run reads the rows in the same order; false: a little "
                                 "faster ingest, an order that varies between runs).")
    validation_rows: Optional[int] = Field(None, ge=1, description="Validation rows per validation pass, over all "
                                           "workers (null: the whole split).")
    read_cpus: float = Field(0.25, gt=0, description="CPUs per Ray Data read/filter task feeding the workers (what "
                             "the workers leave free must cover one).")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        return refuse_keys(data, {"max_photos": "data.max_photos moved to images.max_photos (the image policy the "
                                                "model is trained with, served with and evaluated with)"})

    @model_validator(mode="after")
    def _known_tasks(self):
        unknown = sorted(set(self.tasks) - set(ALL_TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"data.tasks: unknown {unknown} (known: {list(ALL_TASKS)})" if unknown
                             else "data.tasks: at least one task")
        return self


class OptimConfig(Strict):
    """AdamW + cosine schedule with warmup (paper Appendix B)."""

    lr: float = Field(1e-5, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas.")
    eps: float = Field(1e-6, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (not on biases and norms).")
    warmup_ratio: float = Field(0.01, ge=0, lt=1, description="Share of the steps spent warming up linearly.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a share of the peak.")
    epochs: float = Field(3, gt=0, description="Passes over the training split.")
    max_steps: Optional[int] = Field(None, ge=1, description="Optimizer steps (overrides epochs).")
    micro_batch_size: int = Field(4, ge=1, description="Samples per worker per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clipping.")
    seed: int = Field(0, description="Seed of the shuffle.")

    @model_validator(mode="after")
    def _betas(self):
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")
        return self


class ScalingConfig(Strict):
    """Ray Train workers (``ray.train.ScalingConfig``)."""

    num_workers: int = Field(2, ge=1, description="Data-parallel workers (one per GPU in production).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker; on CPU its torch threads are "
                                   "this rounded up.")
    accelerator_type: Optional[str] = Field(None, description="Ray accelerator type, e.g. A100 (null: any).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How workers are placed on nodes.")
    check_capacity: bool = Field(True, description="Refuse up front when the workers cannot fit the cluster "
                                 "(turn off on autoscaling clusters that add nodes on demand).")
    gpu_class: Optional[Literal["ampere+", "volta"]] = Field(
        None, description="GPU class for precision 'auto' (ampere+: bf16, volta: fp16; null: detect on the worker).")


    @property
    def torch_threads(self) -> int:
        """Torch threads of a CPU worker: its reserved CPUs rounded up."""
        return max(1, math.ceil(self.cpus_per_worker))


class CheckpointConfig(Strict):
    """DeepSpeed checkpoints reported to Ray Train (every rank saves its optimizer shard)."""

    every_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    num_to_keep: int = Field(2, ge=1, description="Checkpoints kept in storage.")
    storage_path: Optional[str] = Field(None, description="Ray Train storage (shared on a cluster, e.g. NFS or "
                                        "s3://; null: <run>/train).")


class EvalConfig(Strict):
    """Metrics per report and the generation check after training."""

    report_every: int = Field(10, ge=1, description="Report loss, lr, samples/s, tokens/s every N steps.")
    validation_every: int = Field(50, ge=1, description="Validation loss every N steps (and at the end).")
    recall_rows: int = Field(48, ge=0, description="Validation desc_reference rows generated after training to "
                             "measure attribute recall (0: skip).")
    max_new_tokens: int = Field(96, ge=8, description="Generation length of the recall check.")


class ChaosConfig(Strict):
    """Fault injection for tests and drills: a worker kills itself (SIGKILL) once."""

    kill_at_step: Optional[int] = Field(None, ge=1, description="Optimizer step after which a worker dies (null: never).")
    rank: int = Field(1, ge=0, description="Which worker.")
    delay_s: float = Field(5.0, ge=0, description="Seconds the worker waits before dying. Ray Train's controller "
                           "polls every 2 s: a checkpoint reported just before a crash may not be registered yet, "
                           "and the run then resumes from the one before it.")


class TrainConfig(Strict):
    """``ipl train``: instructions/ + a base VLM -> <run>/models/vlm-ft (Hugging Face format)."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run directory.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base checkpoint.")
    data: DataConfig = Field(default_factory=DataConfig, description="Instruction data.")
    images: Optional[ImagePolicy] = Field(None, description="The image policy (photos per row, min/max pixels per "
                                          "photo) trained with and written into the exported model directory, "
                                          "where serving, captioning and evaluation read it (null: the base "
                                          "checkpoint's processor bounds, 2 photos).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule.")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Workers.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on Ampere+ GPUs, fp16 on V100-class GPUs.")
    deepspeed: dict[str, Any] = Field(
        default_factory=lambda: {"zero_optimization": {"stage": 1}},
        description="DeepSpeed config (JSON keys); batch, accumulation, clipping and precision come from this config.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints.")
    max_failures: int = Field(2, ge=-1, description="Worker failures survived by resuming from the last checkpoint "
                              "(-1: unlimited).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Metrics and the recall check.")
    output: Optional[str] = Field(None, description="Exported model directory (null: <run>/models/vlm-ft).")
    workdir: Optional[str] = Field(None, description="Training directory: checkpoints, metrics.jsonl, summary.json "
                                   "(null: <run>/train).")
    chaos: ChaosConfig = Field(default_factory=ChaosConfig, description="Fault injection (tests).")
    overwrite: bool = Field(False, description="Discard checkpoints of an earlier run with a different config.")

    @model_validator(mode="after")
    def _deepspeed_keys(self):
        clash = sorted(set(self.deepspeed) & set(DERIVED_DS_KEYS))
        if clash:
            raise ValueError("deepspeed: " + "; ".join(f"{k} is set by {DERIVED_DS_KEYS[k]}" for k in clash))
        stage = self.deepspeed.get("zero_optimization", {}).get("stage", 0)
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"deepspeed.zero_optimization.stage must be 0-3, got {stage!r}")
        if self.precision in ("bf16", "fp16") and not self.scaling.use_gpu:
            raise ValueError(f"precision {self.precision} needs scaling.use_gpu=true (CPU training runs in fp32)")
        return self

    # -- resolved paths -------------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        return Path(self.model.path) if self.model.path else self.run.dir / "models" / "vlm-base"

    @property
    def instructions_dir(self) -> Path:
        return Path(self.data.instructions) if self.data.instructions else self.run.dir / "instructions"

    @property
    def train_dir(self) -> Path:
        return Path(self.workdir) if self.workdir else self.run.dir / "train"

    @property
    def storage_path(self) -> str:
        return self.checkpoint.storage_path or str(self.train_dir.resolve())

    @property
    def output_dir(self) -> Path:
        return Path(self.output) if self.output else self.run.dir / "models" / "vlm-ft"

    def zero_stage(self) -> int:
        return int(self.deepspeed.get("zero_optimization", {}).get("stage", 1))

    def memory_need(self) -> Optional[dict]:
        """Per-GPU memory of a worker (:func:`ipl.devices.training_memory_gib`) when training on GPUs
        and the model size is known; None otherwise."""
        from ipl.devices import training_memory_gib
        from ipl.models.vlm import count_params_b

        if not self.scaling.use_gpu:
            return None
        params = self.model.params_b or count_params_b(self.model_path)
        if params is None:
            return None
        precision = self.precision if self.precision != "auto" else "bf16"
        need = training_memory_gib(params, self.zero_stage(), self.scaling.num_workers, precision,
                                   activation_gib=self.model.activation_gib)
        return {**need, "params_b": params, "zero_stage": self.zero_stage(), "precision": precision}

    def resolve_precision(self, gpu_class: Optional[str]) -> str:
        """The precision a worker uses (``gpu_class`` as detected on it when not configured)."""
        if self.precision != "auto":
            return self.precision
        if not self.scaling.use_gpu:
            return "fp32"
        return "fp16" if (self.scaling.gpu_class or gpu_class) == "volta" else "bf16"

    def deepspeed_config(self, precision: str) -> dict:
        """DeepSpeed's config: the YAML section plus the keys derived from this config."""
        ds = json.loads(json.dumps(self.deepspeed))
        ds.setdefault("zero_optimization", {"stage": 1})
        ds.update({
            "train_micro_batch_size_per_gpu": self.optim.micro_batch_size,
            "gradient_accumulation_steps": self.optim.grad_accum,
            "train_batch_size": self.optim.micro_batch_size * self.optim.grad_accum * self.scaling.num_workers,
            "gradient_clipping": self.optim.grad_clip,
            "bf16": {"enabled": precision == "bf16"},
            "fp16": {"enabled": precision == "fp16"},
        })
        ds.setdefault("steps_per_print", 10**9)  # progress is reported through Ray Train
        ds.setdefault("wall_clock_breakdown", False)
        return ds

    def key(self) -> str:
        """What a resumed run must share with the run that wrote the checkpoints."""
        keep = self.model_dump(mode="json", exclude={"run", "ray", "eval", "chaos", "overwrite", "max_failures"})
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
