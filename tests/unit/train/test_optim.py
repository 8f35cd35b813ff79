"""Frozen vision encoder, AdamW settings and the warmup + cosine schedule."""
import math

import pytest
import torch

from ipl.models.vlm import load_vlm, vision_parameters
from ipl.train.config import OptimConfig
from ipl.train.optim import build_optimizer, build_scheduler, freeze_vision, lr_factor, warmup_steps
from ipl.train.collate import Collator


def test_vision_encoder_frozen_merger_and_language_model_train(tiny_vlm, make_row):
    vlm = load_vlm(tiny_vlm.path)
    model = vlm.model
    frozen = freeze_vision(model)
    assert frozen == sum(p.numel() for p in vision_parameters(model)) > 0
    vision = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    merger = {n: p.detach().clone() for n, p in model.named_parameters() if "merger" in n}
    assert merger and all(model.get_parameter(n).requires_grad for n in merger)
    opt = build_optimizer(model, OptimConfig(lr=1e-2))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(model.get_parameter(n)) in in_opt for n in vision)
    model.train()
    batch = Collator(vlm.processor)([make_row("Selling my Huawei P30", 1)])
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    for n, before in vision.items():
        assert torch.equal(model.get_parameter(n), before), n
        assert model.get_parameter(n).grad is None
    assert any(not torch.equal(model.get_parameter(n), b) for n, b in merger.items())


def test_adamw_uses_the_papers_settings(tiny_vlm):
    model = load_vlm(tiny_vlm.path).model
    opt = build_optimizer(model, OptimConfig(lr=3e-4, weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6 and opt.defaults["lr"] == 3e-4
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.1]  # biases and norms are not decayed


def test_cosine_schedule_with_one_percent_warmup():
    cfg = OptimConfig(lr=1.0)
    total = 1000
    w = warmup_steps(cfg, total)
    assert w == 10
    assert lr_factor(0, total, w, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, total, w, 0.0) == pytest.approx(1.0)
    assert lr_factor(10 + 495, total, w, 0.0) == pytest.approx(0.5, abs=1e-2)
    assert lr_factor(total, total, w, 0.0) == pytest.approx(0.0)
    assert lr_factor(total, total, w, 0.1) == pytest.approx(0.1)
    assert warmup_steps(cfg, 50) == 1  # at least one step when there is a warmup ratio


def test_scheduler_drives_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(2))
    cfg = OptimConfig(lr=0.5, warmup_ratio=0.1)
    opt = torch.optim.AdamW([p], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, 20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.25) and seen[1] == pytest.approx(0.5)
    assert seen[-1] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert all(a >= b for a, b in zip(seen[1:], seen[2:]))


def test_nothing_to_train_is_an_error():
    m = torch.nn.Linear(2, 2)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        build_optimizer(m, OptimConfig())
