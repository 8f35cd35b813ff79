"""What trains and how: frozen vision encoder, AdamW groups, cosine schedule with warmup.

* ``freeze_vision(model)``: the vision encoder's parameters stop requiring gradients; the
  language model and the vision-language merger (adapter) stay trainable (paper Section 2.1.2).
* ``build_optimizer(model, cfg)``: ``torch.optim.AdamW`` over the trainable parameters only,
  weight decay off for biases and norm weights (DeepSpeed ZeRO-1 shards its state).
* ``build_scheduler(optimizer, cfg, total_steps)``: linear warmup over
  ``ceil(warmup_ratio * total_steps)`` steps, then cosine to ``min_lr_ratio * lr``.
"""
from __future__ import annotations

import math

import torch

from ipl.models.vlm import vision_parameters
from ipl.train.config import OptimConfig


def freeze_vision(model) -> int:
    """Freeze the vision encoder (not the merger); returns the number of frozen parameters."""
    n = 0
    for p in vision_parameters(model):
        p.requires_grad_(False)
        n += p.numel()
    return n


def trainable_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = trainable_groups(model, cfg.weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    return math.ceil(cfg.warmup_ratio * total_steps)


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    warmup = warmup_steps(cfg, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.min_lr_ratio))
