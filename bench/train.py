"""Benchmark of ``ipl train``: Ray Train + DeepSpeed ZeRO-1 against plain PyTorch DDP, side by side.

    .venv/bin/python bench/train.py --run runs/demo            # needs `ipl synth` + `ipl prepare` there
    .venv/bin/python bench/train.py --run runs/demo --steps 40 --json bench/results/train.json

Both arms train the same base model on the same instruction rows with the same collator,
micro-batch, optimizer and number of steps, 2 processes with one torch thread each:

* ``ray``: the real ``ipl train`` (Ray Data streaming shards, TorchTrainer, DeepSpeed ZeRO-1
  over gloo, one checkpoint at the end) into a temporary run directory;
* ``ddp``: ``torch.multiprocessing`` + ``DistributedDataParallel`` (gloo), rows read with
  pyarrow and split by rank, no checkpoint.

Steady-state samples/s skips the first ``--warmup`` steps (start-up, JIT, first batches);
the wall time of each arm includes everything (Ray start, DeepSpeed init, checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_config(run: Path, steps: int, micro: int, root: str):
    """The local training config both arms use (the DDP arm takes its optimizer and data settings)."""
    from ipl.config import load_config
    from ipl.train.config import TrainConfig

    return load_config(TrainConfig, REPO / "jobs/configs/train_local.yaml", [
        f"run.root={root}", "run.name=bench", f"data.instructions={run / 'instructions'}",
        f"model.path={run / 'models' / 'vlm-base'}", f"optim.max_steps={steps}", f"optim.micro_batch_size={micro}",
        "eval.report_every=1", f"eval.validation_every={10 * steps}", f"checkpoint.every_steps={10 * steps}",
        "eval.recall_rows=0"])


def ray_arm(cfg, warmup: int) -> dict:
    from ipl.train.stage import metrics_history
    from ipl.train.stage import run as run_train

    start = time.monotonic()
    run_train(cfg)
    wall = time.monotonic() - start
    steady = [m for m in metrics_history(cfg) if m["step"] > warmup and "val_loss" not in m]
    return {"wall_s": wall, "samples_per_s": sum(m["samples_per_s"] for m in steady) / len(steady),
            "tokens_per_s": sum(m["tokens_per_s"] for m in steady) / len(steady), "steps": cfg.optim.max_steps}


def _ddp_worker(rank: int, world: int, cfg_json: dict, warmup: int, port: int, out: str):
    import pyarrow.dataset as ds
    import torch
    import torch.distributed as dist

    from ipl.models.vlm import load_vlm
    from ipl.train.collate import Collator
    from ipl.train.config import TrainConfig
    from ipl.train.optim import build_optimizer, build_scheduler, freeze_vision

    cfg = TrainConfig.model_validate(cfg_json)
    steps, micro = cfg.optim.max_steps, cfg.optim.micro_batch_size
    torch.set_num_threads(cfg.scaling.torch_threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    vlm = load_vlm(cfg.model_path)
    model = vlm.model
    freeze_vision(model)
    model.config.use_cache = False
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps)
    table = ds.dataset(cfg.instructions_dir / "split=train", format="parquet").to_table(
        columns=["id", "messages", "photos"], filter=ds.field("task").isin(cfg.data.tasks))
    rows = table.to_pylist()[rank::world]
    collator = Collator(vlm.processor, cfg.data.max_length, policy=cfg.images)
    times, samples = [], 0
    for step in range(steps):
        t = time.monotonic()
        batch = collator(rows[step * micro:(step + 1) * micro])
        loss = ddp(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step >= warmup:
            times.append(time.monotonic() - t)
            samples += int(batch["input_ids"].shape[0])
    stats = torch.tensor([samples, sum(times)], dtype=torch.float64)
    dist.all_reduce(stats)
    if rank == 0:
        Path(out).write_text(json.dumps({"samples": stats[0].item(), "seconds": stats[1].item() / world}))
    dist.destroy_process_group()


def ddp_arm(cfg, warmup: int) -> dict:
    import torch.multiprocessing as mp

    out = tempfile.mktemp(suffix=".json")
    start = time.monotonic()
    world = cfg.scaling.num_workers
    mp.spawn(_ddp_worker, args=(world, cfg.model_dump(mode="json"), warmup, 29533, out), nprocs=world, join=True)
    wall = time.monotonic() - start
    r = json.loads(Path(out).read_text())
    return {"wall_s": wall, "samples_per_s": r["samples"] / r["seconds"], "steps": cfg.optim.max_steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo", help="run directory with instructions/ and models/vlm-base")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    run = Path(args.run).resolve()
    if not (run / "instructions" / "split=train").is_dir():
        raise SystemExit(f"{run}/instructions not found: run `ipl synth` and `ipl prepare` for that run first")
    root = tempfile.mkdtemp(prefix="ipl-bench-train-")
    try:
        cfg = bench_config(run, args.steps, args.micro_batch, root)
        ddp = ddp_arm(cfg, args.warmup)
        print(f"done: DDP {ddp['samples_per_s']:.1f} samples/s, wall {ddp['wall_s']:.0f}s", flush=True)
        ray = ray_arm(cfg, args.warmup)
        print(f"done: Ray Train + DeepSpeed {ray['samples_per_s']:.1f} samples/s, wall {ray['wall_s']:.0f}s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; 2 workers x 1 torch thread; micro-batch {args.micro_batch}/worker; "
          f"{args.steps} steps, steady state after step {args.warmup}")
    print(f"{'arm':<40}{'samples/s':>12}{'wall s':>10}")
    print(f"{'plain PyTorch DDP (gloo, 2 processes)':<40}{ddp['samples_per_s']:>12.1f}{ddp['wall_s']:>10.0f}")
    print(f"{'Ray Train + DeepSpeed ZeRO-1 (2 workers)':<40}{ray['samples_per_s']:>12.1f}{ray['wall_s']:>10.0f}")
    print(f"steady-state throughput ratio Ray+DeepSpeed / DDP: {ray['samples_per_s'] / ddp['samples_per_s']:.2f} "
          f"(overhead {100 * (1 - ray['samples_per_s'] / ddp['samples_per_s']):.0f}%); wall-time ratio "
          f"{ray['wall_s'] / ddp['wall_s']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"ddp": ddp, "ray_deepspeed": ray}, indent=2))


if __name__ == "__main__":
    main()
