"""Build the tiny local models of a run from its synthetic corpus (part of ``ipl synth``).

Writes ``<run>/models/tokenizer/``, ``<run>/models/vlm-base/`` (untrained tiny Qwen2-VL +
processor) and ``<run>/models/clip-base/``: by default the packaged two-tower open_clip
(:mod:`ipl.models.packaged`: pretrained EfficientNet-Lite + MiniLM towers, its projections
aligned on a separate synthetic corpus), or (``clip_model: tiny``) a small ViT trained from
scratch on that corpus. ``models/_build.json`` records what they were built from; a re-run
with the same inputs reuses them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import pyarrow.parquet as pq

from ipl.models.clip import Clip, build_tiny_clip, load_clip, save_clip_dir
from ipl.models.config import TinyModelsConfig
from ipl.models.tokenizer import train_tokenizer
from ipl.models.vlm import build_tiny_vlm
from ipl.runtime import Progress, read_json, write_json_atomic

log = logging.getLogger("ipl.models")


def corpus(raw_dir: Path, max_rows: int, extra: Iterable[str] = ()) -> Iterator[str]:
    """Titles and descriptions of up to ``max_rows`` raw listings, then ``extra`` (the synthetic
    catalogue's vocabulary and the prompts, from ``ipl.synth.vocab``: no library module reads the
    synthetic catalogue)."""
    seen = 0
    for path in sorted(raw_dir.glob("part-*.parquet")):
        table = pq.read_table(path, columns=["title", "description"])
        for title, desc in zip(table.column("title").to_pylist(), table.column("description").to_pylist()):
            yield title
            yield desc
            seen += 1
            if seen >= max_rows:
                break
        if seen >= max_rows:
            break
    if seen == 0:
        raise FileNotFoundError(f"no listings under {raw_dir}: run `ipl synth` first")
    yield from extra


def build_tiny_models(cfg: TinyModelsConfig, run_dir: Path, data_fingerprint: str,
                      clip_corpus: Optional[Callable[[int], list[dict]]] = None,
                      vocabulary: Optional[Callable[[], Iterable[str]]] = None) -> dict:
    """Build (or reuse) the tokenizer, tiny VLM and tiny CLIP under ``run_dir/models``.

    ``clip_corpus(n)`` returns ``n`` listings (photos, category, title, sku_id) to pretrain the
    CLIP on: a corpus apart from the marketplace's own rows, as a real pretrained CLIP never
    saw the listings it later checks (null: no pretraining)."""
    models_dir = run_dir / "models"
    clip_fields = {"clip_model", "compare_tiny_clip", "clip_pretrain_steps", "clip_pretrain_rows", "clip_batch_size", "clip_lr", "clip",
                   "packaged_clip", "seed"}
    key = hashlib.sha256((cfg.model_dump_json(exclude=(clip_fields - {"seed"}) | {"parallel"}) + data_fingerprint
                          ).encode()).hexdigest()[:16]
    clip_key = hashlib.sha256((cfg.model_dump_json(include=clip_fields) + data_fingerprint).encode()).hexdigest()[:16]
    record = models_dir / "_build.json"
    old = read_json(record) if record.exists() else {}
    if old.get("key") == key and old.get("clip_key") == clip_key:
        log.info("tiny models in %s are up to date, reusing them", models_dir)
        return old
    models_dir.mkdir(parents=True, exist_ok=True)
    if old.get("key") == key:  # the tokenizer and the VLM are up to date: only the CLIP changed
        log.info("tokenizer and VLM in %s are up to date, reusing them", models_dir)
        info = {k: old[k] for k in ("key", "tokenizer", "vlm")}
        clip = clip_side(cfg, models_dir, clip_corpus)
    elif cfg.parallel and (os.cpu_count() or 1) >= 2:
        info, clip = both_sides(cfg, run_dir, models_dir, key, vocabulary, clip_corpus)
    else:
        info = build_vlm_side(cfg, run_dir, models_dir, key, vocabulary)
        clip = clip_side(cfg, models_dir, clip_corpus)
    info = {**info, "clip_key": clip_key, **clip}
    write_json_atomic(record, info)
    return info


def build_vlm_side(cfg: TinyModelsConfig, run_dir: Path, models_dir: Path, key: str,
                   vocabulary: Optional[Callable[[], Iterable[str]]],
                   on_step: Optional[Callable[[], None]] = None) -> dict:
    """The tokenizer and the tiny VLM (with its copy pretraining; ``on_step`` is called before
    each of its steps); recorded at once, so a CLIP failure afterwards keeps them."""
    log.info("training the byte-level BPE tokenizer on the synthetic corpus")
    tokenizer = train_tokenizer(corpus(run_dir / "raw", cfg.tokenizer_rows, vocabulary() if vocabulary else ()),
                                cfg.vocab_size)
    tokenizer.save_pretrained(models_dir / "tokenizer")
    log.info("building the tiny Qwen2-VL")
    vlm = build_tiny_vlm(tokenizer, cfg.vlm, models_dir / "vlm-base", seed=cfg.seed)
    vlm_pretrain = {}
    if cfg.vlm_pretrain_steps:
        vlm_pretrain = pretrain_vlm(cfg, vlm, on_step)
    info = {"key": key, "tokenizer": {"path": str(models_dir / "tokenizer"), "vocab": len(tokenizer)},
            "vlm": {"path": str(vlm.path), "parameters": sum(p.numel() for p in vlm.model.parameters()),
                    "pretrain": vlm_pretrain}}
    write_json_atomic(models_dir / "_build.json", info)  # a CLIP failure afterwards keeps the VLM
    return info


def clip_side(cfg: TinyModelsConfig, models_dir: Path, clip_corpus: Optional[Callable[[int], list[dict]]]) -> dict:
    """``clip`` (the base CLIP) and, with ``compare_tiny_clip``, ``compare_clip`` (the tiny ViT), both
    pretrained on the same corpus, rendered once."""
    if clip_corpus is not None:  # the tiny ViT is pretrained on the rows the base CLIP was: render them once
        clip_corpus = functools.lru_cache(maxsize=1)(clip_corpus)
    out = {"clip": build_base_clip(cfg, models_dir / "clip-base", clip_corpus)}
    if cfg.compare_tiny_clip and cfg.clip_model != "tiny":
        log.info("building the tiny ViT CLIP for comparison (models/clip-tiny)")
        out["compare_clip"] = build_base_clip(cfg.model_copy(update={"clip_model": "tiny"}), models_dir / "clip-tiny",
                                              clip_corpus)
    return out


def _clip_side_process(cfg: TinyModelsConfig, models_dir: Path, clip_corpus, threads: int, level: int) -> dict:
    """:func:`clip_side` in a spawned process: the parent's log lines and ipl level, ``threads`` torch threads."""
    import torch

    from ipl.runtime import log_to_stderr

    log_to_stderr(level)
    torch.set_num_threads(threads)
    return clip_side(cfg, models_dir, clip_corpus)


def both_sides(cfg: TinyModelsConfig, run_dir: Path, models_dir: Path, key: str, vocabulary, clip_corpus
               ) -> tuple[dict, dict]:
    """(:func:`build_vlm_side`, :func:`clip_side`) at once: the CLIP side in a spawned process
    (``clip_corpus`` must pickle), the VLM side here, each with half the CPUs as torch threads; once
    the CLIP side is done, the VLM's remaining steps take every CPU (on 2 cores a copy-pretraining
    step runs 1.39x faster on 2 threads than on 1, with the same losses to the last digit). A
    failure here does not wait for the CLIP side."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, (os.cpu_count() or 2) // 2)
    log.info("building the CLIP side in a second process (%d torch threads each) while the VLM trains", threads)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_clip_side_process, cfg, models_dir, clip_corpus, threads,
                         logging.getLogger("ipl").getEffectiveLevel())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    every = max(threads, os.cpu_count() or threads)

    def alone() -> None:  # called by the VLM's training loop in this (the training) thread
        if future.done() and torch.get_num_threads() != every:
            torch.set_num_threads(every)
            log.info("the CLIP side is done: the VLM's copy pretraining goes on with %d torch threads", every)

    try:
        info = build_vlm_side(cfg, run_dir, models_dir, key, vocabulary, on_step=alone)
        return info, future.result()
    finally:
        torch.set_num_threads(before)
        pool.shutdown(wait=False, cancel_futures=True)


def build_base_clip(cfg: TinyModelsConfig, out: Path, clip_corpus: Optional[Callable[[int], list[dict]]]) -> dict:
    """Build ``clip-base`` (packaged two-tower or tiny ViT) and pretrain it on the separate corpus."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.clip_model == "packaged":
        from ipl.models.packaged import build_packaged_clip

        log.info("assembling the packaged open_clip (%s + MiniLM, %d px)", cfg.packaged_clip.image_tower,
                 cfg.packaged_clip.image_size)
        clip = build_packaged_clip(cfg.packaged_clip, tmp, seed=cfg.seed)
    else:
        log.info("building the tiny open_clip")
        clip = build_tiny_clip(cfg.clip, tmp, seed=cfg.seed)
    pretrain = {}
    if cfg.clip_pretrain_steps and clip_corpus is not None:
        pretrain = pretrain_clip(cfg, clip, clip_corpus(cfg.clip_pretrain_rows), tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    clip = load_clip(out)
    return {"model": cfg.clip_model, "path": str(out), "parameters": sum(p.numel() for p in clip.model.parameters()),
            "trainable": sum(p.numel() for p in clip.model.parameters() if p.requires_grad),
            "fingerprint": clip.fingerprint, "dim": clip.dim, "pretrain": pretrain}


def pretrain_vlm(cfg: TinyModelsConfig, vlm, on_step: Optional[Callable[[], None]] = None) -> dict:
    """Give the tiny VLM a real base model's copy skill (see ``ipl.models.lm_pretrain``), save it."""
    from ipl.models.lm_pretrain import pretrain_copy

    log.info("pretraining the tiny VLM to restate facts from its prompt: %d steps x %d",
             cfg.vlm_pretrain_steps, cfg.vlm_pretrain_batch_size)
    out = pretrain_copy(vlm.model, vlm.tokenizer, cfg.vlm_pretrain_steps, cfg.vlm_pretrain_batch_size,
                        cfg.vlm_pretrain_lr, seed=cfg.seed, progress=log.info, on_step=on_step)
    vlm.model.save_pretrained(vlm.path)
    log.info("tiny VLM copy recall on fresh facts: %.2f -> %.2f (%.0fs)",
             out["copy_recall_before"], out["copy_recall_after"], out["seconds"])
    return out


def pretrain_clip(cfg: TinyModelsConfig, clip: Clip, rows: list[dict], out_dir: Path) -> dict:
    """Contrastively pretrain the base CLIP on ``rows`` (the tiny ViT: as a stand-in for pretrained
    weights; the packaged model: its projections, on its locked towers' features)."""
    from ipl.models.clip_train import (caption_scores, consistency_threshold, contrastive_train, prepare_data,
                                       retrieval_accuracy)

    held = max(1, len(rows) // 10)
    meter: dict = {}

    def progress(done: int, total: int) -> None:  # every 10 s with rate and ETA, and at the end
        if "p" not in meter:
            meter["p"] = Progress("base CLIP features (photos)", total, every=10.0)
        meter["p"].update(done, force=done == total)

    train = prepare_data(clip, rows[held:], progress=progress)
    test_rows = [r for r in rows[:held] if r["photos"]]
    test = prepare_data(clip, test_rows, max_photos=1)
    before = retrieval_accuracy(clip, test)
    log.info("pretraining the base CLIP: %d photos, %d steps%s", len(train.groups), cfg.clip_pretrain_steps,
             " (projections on locked towers' features)" if train.features else "")
    losses = contrastive_train(clip.model, train, cfg.clip_pretrain_steps, cfg.clip_batch_size, cfg.clip_lr, cfg.seed)
    after = retrieval_accuracy(clip, test)
    consistency = consistency_threshold(*caption_scores(clip, test, [r["category"] for r in test_rows]))
    log.info("base CLIP consistency threshold %.3f (balanced accuracy %.3f on %d held-out pairs)",
             consistency["threshold"], consistency["balanced_accuracy"], consistency["pairs"])
    meta = json.loads((out_dir / "open_clip_config.json").read_text())
    ipl_meta = {**meta.get("ipl", {}), "consistency": consistency}
    save_clip_dir(clip.model, meta["model_cfg"], out_dir, like=out_dir, extra={"ipl": ipl_meta})
    log.info("base CLIP image->caption top-1 on %d held-out listings: %.2f -> %.2f", held, before, after)
    return {"photos": int(len(train.groups)), "steps": cfg.clip_pretrain_steps, "loss_first": losses[0],
            "loss_last": float(sum(losses[-20:]) / len(losses[-20:])), "heldout_top1_before": before,
            "heldout_top1_after": after, "consistency": consistency}

