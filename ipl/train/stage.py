"""The ``ipl train`` stage: plan, run the TorchTrainer, export, check what the model learned.

``ipl train [--config jobs/configs/train_local.yaml] [key=value ...]`` or
``ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/train_24gpu.yaml``.

* The plan (rows per worker, optimizer steps per epoch, total steps) is made up front from
  the instruction split, so the schedule and a resumed run agree.
* Ray Train storage is ``<run>/train/`` (``checkpoint.storage_path`` on a cluster); the
  trainer's name is fixed, so re-running the same command with the same run name resumes
  from the latest checkpoint. A re-run with a different config is refused unless
  ``overwrite=true``; a re-run of a finished run only reprints its summary.
* The final checkpoint's ``hf/`` export is copied to ``<run>/models/vlm-ft`` (temp dir +
  rename), then the exported model is reloaded with transformers and generates descriptions
  for SKU-held-out validation rows: their attribute recall goes into ``train/summary.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from pathlib import Path

from ipl.config import ConfigError
from ipl.models.vlm import model_fingerprint, require_local_dir
from ipl.runtime import ensure_ray, read_json, write_json_atomic
from ipl.train.capacity import check_capacity
from ipl.train.config import TrainConfig
from ipl.train.optim import warmup_steps

log = logging.getLogger("ipl.train")
TRAINER_NAME = "vlm"


def split_dir(cfg: TrainConfig, split: str) -> Path:
    d = cfg.instructions_dir / f"split={split}"
    if not d.is_dir():
        raise FileNotFoundError(f"no {split} split at {d}: run `ipl prepare` first (it writes instructions/)")
    return d


def subsampled(cfg: TrainConfig, split: str) -> bool:
    """Whether ``data.fraction`` thins this split (the training split only); refuses instruction data
    without the ``draw`` column it needs."""
    if split != "train" or cfg.data.fraction >= 1:
        return False
    import pyarrow.dataset as ds

    if "draw" not in ds.dataset(split_dir(cfg, split), format="parquet").schema.names:
        raise ConfigError(f"data.fraction={cfg.data.fraction} needs the instructions' `draw` column, which "
                          f"{cfg.instructions_dir} lacks (written before it existed): re-run `ipl prepare`")
    return True


def count_rows(cfg: TrainConfig, split: str) -> int:
    import pyarrow.dataset as ds

    keep = ds.field("task").isin(list(cfg.data.tasks))
    if subsampled(cfg, split):
        keep = keep & (ds.field("draw") < cfg.data.fraction)
    return ds.dataset(split_dir(cfg, split), format="parquet").count_rows(filter=keep)


def make_plan(cfg: TrainConfig) -> dict:
    """Steps and sizes decided before any worker starts (they must agree on them)."""
    model_path = require_local_dir(cfg.model_path, "base VLM", "run `ipl synth` (tiny model) or set model.path")
    n_train, n_val = count_rows(cfg, "train"), count_rows(cfg, "validation")
    workers, micro, accum = cfg.scaling.num_workers, cfg.optim.micro_batch_size, cfg.optim.grad_accum
    per_worker = n_train // workers
    spe = per_worker // (micro * accum)
    if spe < 1:
        share = f" (data.fraction {cfg.data.fraction})" if cfg.data.fraction < 1 else ""
        raise ConfigError(f"{n_train} training rows of tasks {cfg.data.tasks}{share} are too few for {workers} "
                          f"workers x micro_batch_size {micro} x grad_accum {accum}: prepare more data or lower them")
    if n_val < workers:
        raise ConfigError(f"{n_val} validation rows for {workers} workers: raise instructions.validation_fraction")
    total = cfg.optim.max_steps or max(1, math.ceil(cfg.optim.epochs * spe))
    return {"model_path": str(model_path.resolve()), "train_rows": n_train, "validation_rows": n_val,
            "rows_per_worker": per_worker, "steps_per_epoch": spe, "total_steps": total,
            "global_batch": micro * accum * workers, "train_dir": str(cfg.train_dir.resolve()),
            "warmup_steps": warmup_steps(cfg.optim, total)}


def datasets(cfg: TrainConfig) -> dict:
    import ray.data
    from ray.data.expressions import col

    cols = ["id", "task", "messages", "photos"]
    out = {}
    for split in ("train", "validation"):
        ds = ray.data.read_parquet(str(split_dir(cfg, split).resolve()), num_cpus=cfg.data.read_cpus)
        keep = col("task").is_in(list(cfg.data.tasks))
        if subsampled(cfg, split):
            keep = keep & (col("draw") < cfg.data.fraction)
        ds = ds.filter(expr=keep, num_cpus=cfg.data.read_cpus).select_columns(cols)
        out[split] = ds
    return out


def input_fingerprints(cfg: TrainConfig) -> dict:
    """What the run trains from besides its config: the base checkpoint and the instruction data."""
    manifest = cfg.instructions_dir / "manifest.json"
    return {"model": model_fingerprint(cfg.model_path) if (cfg.model_path / "config.json").exists() else None,
            "instructions": hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.exists() else None}


def check_previous(cfg: TrainConfig) -> dict | None:
    """The finished summary to reuse, or None to (re)start; refuses a changed config or changed inputs."""
    record = cfg.train_dir / "_config.json"
    if record.exists():
        old = read_json(record)
        inputs = input_fingerprints(cfg)
        changed = [] if old.get("key") == cfg.key() else [f"the config (key {old.get('key')} != {cfg.key()})"]
        where = {"model": f"base model {cfg.model_path}", "instructions": cfg.instructions_dir}
        changed += [f"the {what} ({where[what]})" for what, fp in inputs.items()
                    if old.get("inputs", {}).get(what, "unrecorded") != fp]
        if changed:
            if not cfg.overwrite:
                raise ConfigError(f"{cfg.train_dir} holds a training run made with different inputs: "
                                  f"{' and '.join(changed)} changed since; use another run.name, or overwrite=true "
                                  "to discard it")
            log.warning("overwrite=true: discarding %s and %s", cfg.train_dir, cfg.output_dir)
            shutil.rmtree(cfg.train_dir)
            shutil.rmtree(cfg.output_dir, ignore_errors=True)
        elif (cfg.train_dir / "summary.json").exists() and cfg.output_dir.is_dir():
            return read_json(cfg.train_dir / "summary.json")
    return None


def fit(cfg: TrainConfig, plan: dict):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from ipl.train.loop import train_loop

    scaling = ray.train.ScalingConfig(
        num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
        resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
        placement_strategy=cfg.scaling.placement_strategy, accelerator_type=cfg.scaling.accelerator_type)
    from ipl.runtime import no_data_progress, train_logging

    logging_config, quiet_env = train_logging()
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **quiet_env}
    if not cfg.scaling.use_gpu:
        env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(cfg.scaling.torch_threads)})
    run_config = ray.train.RunConfig(
        name=TRAINER_NAME, storage_path=cfg.storage_path,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
        worker_runtime_env={"env_vars": env}, logging_config=logging_config)
    with warnings.catch_warnings():  # Ray's own default sets a field it has deprecated (RayDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = cfg.data.preserve_order
    with no_data_progress():
        trainer = TorchTrainer(
            train_loop, train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan},
            scaling_config=scaling, run_config=run_config, datasets=datasets(cfg),
            dataset_config=ray.train.DataConfig(execution_options=ingest),
            torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"))
        return trainer.fit()


def export(result, out_dir: Path) -> None:
    """Copy the final checkpoint's hf/ export to ``out_dir`` atomically."""
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with result.checkpoint.as_directory() as d:
        hf = Path(d) / "hf"
        if not (hf / "config.json").is_file():
            raise RuntimeError(f"the final checkpoint {result.checkpoint.path} has no hf/ export")
        shutil.copytree(hf, tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def metrics_history(cfg: TrainConfig) -> list[dict]:
    """Every report rank 0 wrote (a resumed run repeats the steps after its checkpoint)."""
    path = cfg.train_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(cfg: TrainConfig) -> dict:
    previous = check_previous(cfg)
    if previous is not None:
        log.warning("%s is already trained with this config: reusing it (overwrite=true retrains)", cfg.output_dir)
        return {**previous, "reused": True}
    plan = make_plan(cfg)
    write_json_atomic(cfg.train_dir / "_config.json", {"key": cfg.key(), "inputs": input_fingerprints(cfg), "plan": plan,
                                                       "config": cfg.model_dump(mode="json")})
    log.info("training: %d rows, %d steps (%d per epoch, global batch %d) on %d workers",
                plan["train_rows"], plan["total_steps"], plan["steps_per_epoch"], plan["global_batch"],
                cfg.scaling.num_workers)
    ray = ensure_ray(cfg.ray)
    if cfg.scaling.check_capacity:
        placement = check_capacity(cfg.scaling, ray.nodes(), data_cpus=cfg.data.read_cpus, memory=cfg.memory_need())
        log.info("workers per node: %s", placement)
    try:
        result = fit(cfg, plan)
        error = result.error
    except Exception as exc:  # Ray raises TrainingFailedError / WorkerGroupError once max_failures is spent
        error = exc
    if error:
        raise RuntimeError(f"training failed after {cfg.max_failures} restarts: {str(error)[:2000]}\n"
                           f"Checkpoints are kept in {cfg.storage_path}/{TRAINER_NAME}: re-run the same command "
                           f"(same run.name) to resume from the latest one.") from None
    export(result, cfg.output_dir)
    summary = {"key": cfg.key(), "plan": plan, "output": str(cfg.output_dir), "final": result.metrics,
               "checkpoint": str(result.checkpoint.path)}
    if cfg.eval.recall_rows:
        from ipl.train.quality import recall_check_remote

        summary["recall"] = recall_check_remote(cfg, cfg.output_dir)
    write_json_atomic(cfg.train_dir / "summary.json", summary)
    return summary


def report(summary: dict) -> str:
    plan, final = summary["plan"], summary.get("final") or {}
    lines = [f"trained {plan['total_steps']} steps on {plan['train_rows']} rows "
             f"(global batch {plan['global_batch']}){' [reused]' if summary.get('reused') else ''}"]
    if final:
        lines.append(f"  final: loss {final.get('loss')}, val_loss {final.get('val_loss')}, "
                     f"{final.get('samples_per_s', 0):.1f} samples/s, {final.get('tokens_per_s', 0):.0f} tokens/s")
    rec = summary.get("recall")
    if rec:
        lines.append(f"  attribute recall of generations on {rec['rows']} held-out rows (given template + reference): "
                     f"{rec['recall']:.2f} ({rec['found']}/{rec['values']} reference values stated; "
                     f"{rec['recall_without_reference']:.2f} when the reference is left out); "
                     f"casual style {rec['casual']:.2f}")
        if rec.get("example"):
            ex = rec["example"]
            lines.append(f"  example ({ex['group']}): {ex['generated']}")
    lines.append(f"  model: {summary['output']}")
    return "\n".join(lines)


def main(cfg: TrainConfig) -> int:
    print(report(run(cfg)))
    return 0
