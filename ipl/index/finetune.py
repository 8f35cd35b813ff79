"""Contrastive fine-tuning of the open_clip encoder on the cleaned listings, with Ray Train.

Each ``TorchTrainer`` worker reads its Ray Data shard of the index's listings (held-out
listings excluded), decodes photos and captions ("<category>: <title>"), and runs
:func:`ipl.models.clip_train.contrastive_train` (multi-positive InfoNCE: photos of the same
SKU are positives). Gradients are averaged across workers after every backward pass
(``torch.distributed.all_reduce`` over the gloo/nccl group Ray Train sets up), so the
replicas stay identical. Rank 0 writes the model in open_clip's local-dir layout and reports
it as the run's checkpoint; the driver copies it to ``<run>/models/clip`` atomically.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import tempfile
from pathlib import Path
from typing import Sequence

from ipl.index.config import IndexConfig
from ipl.runtime import Progress, read_json, write_json_atomic

log = logging.getLogger("ipl.index")
KEY_FILE = "_finetune.json"
READ_CPUS = 0.25  # per Ray Data read task feeding the workers


def _average_gradients(model) -> None:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() < 2:
        return
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def finetune_loop(config: dict) -> None:
    """Ray Train worker: fine-tune, then rank 0 reports the model directory as a checkpoint."""
    import json

    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from ipl.models.clip import load_clip, save_clip_dir
    from ipl.models.clip_train import contrastive_train, prepare_data
    from ipl.runtime import quiet_train_worker

    quiet_train_worker()

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])  # identical initial replicas
    # on the worker's device (its GPU under use_gpu): NCCL all-reduces CUDA tensors only
    clip = load_clip(config["base"], config["weights"], device=str(ray.train.torch.get_device()),
                     feature_cache=config.get("feature_cache"))  # the trunk's features ipl prepare kept
    holdout = set(config["holdout"])
    if rank == 0:  # the workers' start and the shard's first blocks take a while: say where it stands
        print(f"clip fine-tune: {ctx.get_world_size()} worker(s) up, reading the listings shard", flush=True)
    rows = [r for r in ray.train.get_dataset_shard("listings").iter_rows() if r["listing_id"] not in holdout]
    started, shown = time.monotonic(), [0.0]

    def features(done: int, total: int) -> None:  # at least every 15 s, with rate and ETA
        now = time.monotonic()
        if rank == 0 and (done == total or now - shown[0] >= 15):
            shown[0] = now
            rate = done / max(1e-9, now - started)
            cached = f", {clip.feature_cache.hits} from the feature cache" if clip.feature_cache is not None else ""
            print(f"clip fine-tune: locked towers' features {done}/{total} photos ({rate:.0f}/s, ETA "
                  f"{(total - done) / max(rate, 1e-9):.0f}s{cached})", flush=True)

    data = prepare_data(clip, rows, max_photos=config["max_photos"], progress=features)

    steps = Progress("clip fine-tune steps", config["steps"], every=10.0, say=lambda line: print(line, flush=True))

    def progress(step: int, loss: float) -> None:  # a line every 10 s (with rate and ETA), and the last step
        if rank == 0:
            steps.update(step + 1, force=step + 1 == config["steps"], note=f"loss {loss:.3f}")

    losses = contrastive_train(
        clip.model, data, steps=config["steps"], batch_size=min(config["batch_size"], len(data.groups)),
        lr=config["lr"], seed=config["seed"] + rank, log_every=0, after_backward=_average_gradients,
        image_weight=config["image_weight"], similarity_weight=config["similarity_weight"],
        family_weight=config.get("family_weight", 0.0), step_hook=progress)
    metrics = {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
               "photos": int(len(data.groups)), "steps": len(losses), "locked_towers": bool(data.features),
               "feature_cache_hits": clip.feature_cache.hits if clip.feature_cache is not None else 0}
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(config["base"]) / "open_clip_config.json"
            model_cfg = json.loads(cfg_path.read_text())["model_cfg"] if cfg_path.is_file() else config["model_cfg"]
            save_clip_dir(clip.model, model_cfg, tmp, like=config["base"] if cfg_path.is_file() else None)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def finetune(cfg: IndexConfig, holdout: list[str], untrained: Sequence[str] = ()) -> dict:
    """Fine-tune (or reuse a fine-tuned encoder with the same key); returns what was done.
    Neither the ``holdout`` listings nor the ``untrained`` ones (indexed, but new to every model:
    ``eval.untrained_split``) are trained on."""
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = cfg.clip_dir
    key = cfg.encoder_key(untrained)
    if (out / KEY_FILE).is_file() and read_json(out / KEY_FILE).get("key") == key:
        log.info("encoder %s is already fine-tuned with this config: reusing it", out)
        return {**read_json(out / KEY_FILE), "reused": True}
    if not Path(cfg.base_clip).is_dir() and cfg.encoder.weights is None:
        raise FileNotFoundError(f"base CLIP {cfg.base_clip} not found: run `ipl synth` (tiny model) or set "
                                "encoder.path (+ encoder.weights)")
    sc = cfg.encoder.scaling
    from ipl.runtime import no_data_progress, train_logging

    with no_data_progress():  # a dataset keeps the context it was made with (Ray Train streams it in an actor)
        ds = ray.data.read_parquet(str(cfg.listings_dir.resolve()), num_cpus=READ_CPUS).select_columns(
            ["listing_id", "sku_id", "spu_id", "category", "title", "photos"])
    model_cfg = None
    if not Path(cfg.base_clip).is_dir():
        import open_clip

        model_cfg = open_clip.get_model_config(cfg.base_clip)
    threads = sc.torch_threads
    if sc.check_capacity:
        from ipl.train.capacity import check_capacity

        check_capacity(sc, ray.nodes(), data_cpus=READ_CPUS)
    logging_config, quiet_env = train_logging()
    trainer = TorchTrainer(
        finetune_loop,
        train_loop_config={"base": str(Path(cfg.base_clip).resolve()) if Path(cfg.base_clip).is_dir() else cfg.base_clip,
                           "weights": cfg.encoder.weights, "holdout": sorted({*holdout, *untrained}), "steps": cfg.encoder.steps,
                           "batch_size": cfg.encoder.batch_size, "lr": cfg.encoder.lr, "seed": cfg.eval.seed,
                           "max_photos": cfg.encoder.max_photos, "image_weight": cfg.encoder.image_weight,
                           "similarity_weight": cfg.encoder.similarity_weight,
                           "family_weight": cfg.encoder.family_weight, "threads": threads, "model_cfg": model_cfg,
                           "feature_cache": cfg.feature_cache_dir},
        scaling_config=ray.train.ScalingConfig(
            num_workers=sc.num_workers, use_gpu=sc.use_gpu,
            resources_per_worker={"CPU": sc.cpus_per_worker, **({"GPU": 1} if sc.use_gpu else {})},
            placement_strategy=sc.placement_strategy, accelerator_type=sc.accelerator_type),
        run_config=ray.train.RunConfig(
            name="clip", storage_path=str((cfg.run.dir / "index-train").resolve()),
            failure_config=ray.train.FailureConfig(max_failures=1),
            worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), **quiet_env}},
            logging_config=logging_config),
        datasets={"listings": ds},
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"))
    with no_data_progress():
        result = trainer.fit()
    if result.error or result.checkpoint is None:
        raise RuntimeError(f"encoder fine-tuning failed: {result.error}")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with result.checkpoint.as_directory() as d:
        shutil.copytree(d, tmp)
    record = {"key": key, "base": cfg.base_clip, **{k: result.metrics[k] for k in ("loss_first", "loss_last",
                                                                                  "photos", "steps")},
              "feature_cache_hits_rank0": int(result.metrics.get("feature_cache_hits", 0)),
              "untrained": len(untrained)}
    write_json_atomic(tmp / KEY_FILE, record)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return record
