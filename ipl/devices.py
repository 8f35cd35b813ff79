"""Where a model runs and in which precision: one policy for every stage and deployment.

* :func:`placement_device` -- the torch device of a model loaded *here*: ``"cuda"`` when this
  process was given a GPU (a Ray actor, task or Serve replica with ``num_gpus`` > 0: Ray sets
  ``ray.get_gpu_ids()`` and ``CUDA_VISIBLE_DEVICES`` for it) and CUDA works, else ``"cpu"``.
  ``requested="cuda"`` without a usable GPU is a :class:`~ipl.config.ConfigError`, never a
  silent CPU fallback on a GPU reservation. Every loader (open_clip towers, the VLM, the
  caption actors, the evaluation actors, Serve replicas) goes through it, so a reservation
  of GPUs is a model on a GPU.
* :func:`resolve_dtype` -- the precision policy: ``"auto"`` is float32 on the CPU, bfloat16 on a
  GPU that supports it (Ampere and newer) and float16 on older GPUs (V100 class) only after
  :func:`require_finite` has seen finite logits on a probe batch (fp16 overflow is a known
  failure of the Qwen2 family); an explicit ``bfloat16`` on a GPU without it is refused with
  the alternative named.
* :data:`ACCELERATOR_MEMORY_GIB` / :func:`accelerator_memory_gib` -- memory per accelerator
  type, read by the offline capacity check (:mod:`ipl.cluster`).
"""
from __future__ import annotations

import os
import re
from typing import Optional

from ipl.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16")

# GiB per GPU of the accelerator types Ray labels nodes with (accelerator_type:<T>); a label may
# carry the size (A100-80G, Tesla-V100-SXM2-32GB), which wins over this table.
ACCELERATOR_MEMORY_GIB = {"V100": 16, "T4": 16, "A10G": 24, "L4": 24, "A100": 40, "A800": 80, "H100": 80,
                          "H800": 80, "H200": 141, "L40S": 48}


def cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)
    except Exception:  # noqa: BLE001 - a broken CUDA install is "no GPU" here
        return False


def placement_device(requested: str = "auto", num_gpus: Optional[float] = None) -> str:
    """``"cuda"`` or ``"cpu"`` for a model loaded in this process (see the module doc).

    ``num_gpus`` is the caller's own reservation when it knows it (a Ray Data actor's
    ``num_gpus``: 0 keeps it on the CPU even where a GPU is visible); without it the GPUs this
    process can see decide (Ray hides the node's GPUs from a worker that reserved none)."""
    requested = (requested or "auto").lower()
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not cuda_usable():
            raise ConfigError(f"device {requested!r} requested but CUDA is not available in this process "
                              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                              "give the actor/deployment num_gpus or set the device to auto/cpu")
        return requested
    if requested != "auto":
        raise ConfigError(f"device {requested!r}: expected auto, cpu or cuda[:N]")
    if num_gpus is not None and num_gpus <= 0:
        return "cpu"
    # a Ray worker without a GPU reservation sees none (Ray sets CUDA_VISIBLE_DEVICES="" for it)
    return "cuda" if cuda_usable() else "cpu"


def supports_bf16(device: str) -> bool:
    if not device.startswith("cuda"):
        return True  # CPU bfloat16 works (slowly); float32 is the CPU default anyway
    import torch

    return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(requested: str, device: str) -> str:
    """The dtype name to load a model in (see the module doc); ConfigError on a refusal."""
    requested = requested or "auto"
    if requested not in (*DTYPES, "auto"):
        raise ConfigError(f"dtype {requested!r}: expected auto, {', '.join(DTYPES)}")
    on_gpu = device.startswith("cuda")
    if requested == "auto":
        if not on_gpu:
            return "float32"
        return "bfloat16" if supports_bf16(device) else "float16"
    if requested == "bfloat16" and on_gpu and not supports_bf16(device):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        raise ConfigError(f"dtype bfloat16 on {name}: this GPU has no bfloat16; use dtype float16 (checked for "
                          "finite logits at start-up) or a bf16 GPU (A100/A10G/L4/H100)")
    return requested


def needs_probe(dtype: str, device: str) -> bool:
    """float16 on a GPU: the served model must show finite logits before it takes traffic."""
    return dtype == "float16" and device.startswith("cuda")


class PrecisionError(RuntimeError):
    pass


def require_finite(logits, what: str, dtype: str) -> None:
    """Raise :class:`PrecisionError` unless every logit is finite."""
    import torch

    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise PrecisionError(f"{what} in {dtype}: {bad} of {logits.numel()} logits on the start-up probe batch are "
                             "not finite (fp16 overflow); serve in bfloat16 on a GPU that has it (A100/A10G/L4/H100) "
                             "or in float32, not float16")


def probe_vlm(vlm, dtype: str, what: str = "VLM") -> None:
    """One forward pass on a probe batch (a chat turn with one grey photo); PrecisionError when
    the logits are not finite."""
    import torch
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this item."}]}]
    text = vlm.processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) \
        if hasattr(vlm.processor, "tokenizer") else "Describe this item."
    enc = vlm.processor(text=[text], images=[Image.new("RGB", (224, 224), (128, 128, 128))], return_tensors="pt")
    enc = {k: v.to(vlm.model.device) for k, v in enc.items()}
    with torch.no_grad():
        logits = vlm.model(**enc).logits
    require_finite(logits, what, dtype)


_SIZE = re.compile(r"(\d+)\s*G", re.I)


def accelerator_memory_gib(label: str) -> Optional[float]:
    """GiB per GPU of an accelerator label (``V100``, ``A100-80G``, ``Tesla-V100-SXM2-32GB``);
    None when unknown."""
    m = _SIZE.search(label.split("-", 1)[1] if "-" in label else "")
    if m:
        return float(m.group(1))
    up = label.upper()
    for name in sorted(ACCELERATOR_MEMORY_GIB, key=len, reverse=True):
        if name in up:
            return float(ACCELERATOR_MEMORY_GIB[name])
    return None


def labels_memory_gib(labels) -> Optional[float]:
    """GiB per GPU of a node from its accelerator labels (``V100-32G`` or ``accelerator_type:A100``;
    a label carrying its size wins over the table); None when none is known."""
    sizes = [accelerator_memory_gib(str(t).split(":", 1)[-1]) for t in labels]
    sizes = [s for s in sizes if s]
    return max(sizes) if sizes else None


# -- memory arithmetic (the offline capacity check and the training capacity check) -----------------
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2, "fp32": 4, "bf16": 2, "fp16": 2}
GIB = 1024 ** 3


def serving_memory_gib(params_b: float, dtype: str, tensor_parallel: int = 1, kv_reserve_gib: float = 2.0,
                       overhead_gib: float = 1.0) -> dict:
    """Per-GPU memory a served model needs: its weights split over ``tensor_parallel`` GPUs, the
    runtime overhead (CUDA context, activations of a step) and at least ``kv_reserve_gib`` of KV
    cache. ``auto`` counts 2 bytes a parameter (bf16/fp16 on a GPU)."""
    weights = params_b * 1e9 * DTYPE_BYTES[dtype] / GIB / max(1, tensor_parallel)
    return {"weights_gib": weights, "overhead_gib": overhead_gib, "kv_gib": kv_reserve_gib,
            "total_gib": weights + overhead_gib + kv_reserve_gib}


def training_memory_gib(params_b: float, zero_stage: int, world_size: int, precision: str = "bf16",
                        trainable_fraction: float = 1.0, activation_gib: float = 4.0) -> dict:
    """Per-GPU memory of mixed-precision AdamW under DeepSpeed ZeRO (the ZeRO paper's accounting):
    2-byte weights and gradients, a 4-byte master copy and two 4-byte Adam moments of the trainable
    part (12 bytes); stage 1 shards the optimizer state over the ``world_size`` workers, stage 2
    also the gradients, stage 3 also the weights; fp32 training keeps 4-byte weights and grads."""
    n = params_b * 1e9
    t = n * trainable_fraction
    w = max(1, world_size)
    wb = 4 if precision in ("fp32", "float32") else 2
    opt = t * (12 if wb == 2 else 8)  # master copy + moments (fp32 training: moments only)
    weights, grads = n * wb, t * wb
    if zero_stage >= 1:
        opt /= w
    if zero_stage >= 2:
        grads /= w
    if zero_stage >= 3:
        weights /= w
    out = {"weights_gib": weights / GIB, "grads_gib": grads / GIB, "optimizer_gib": opt / GIB,
           "activation_gib": activation_gib}
    out["total_gib"] = sum(out.values())
    return out
