"""The Ray Train worker loop: DeepSpeed ZeRO-1 over Ray Data shards, checkpoints, metrics.

Every worker runs :func:`train_loop` (``TorchTrainer(train_loop, ...)``):

1. load the base checkpoint with :func:`ipl.models.vlm.load_vlm` (tiny or 7B, same code),
   freeze the vision encoder, build AdamW + the cosine schedule and hand them to
   ``deepspeed.initialize`` with the job's DeepSpeed config;
2. resume from ``ray.train.get_checkpoint()`` if there is one (a restarted worker group,
   or the same command re-run with the same run name): ``engine.load_checkpoint`` restores
   model, ZeRO optimizer shard and scheduler, and the step to continue from;
3. stream ``ray.train.get_dataset_shard("train")`` in micro-batches through the
   :class:`~ipl.train.collate.Collator`; ``engine.backward``/``engine.step`` do accumulation
   and clipping;
4. every ``eval.report_every`` steps report loss, learning rate, samples/s and tokens/s
   (summed over workers); every ``eval.validation_every`` steps the validation loss on the
   SKU-held-out split; every ``checkpoint.every_steps`` steps a DeepSpeed checkpoint saved by
   every rank and reported with ``ray.train.report`` (Ray merges the ranks' files);
5. at the end the final checkpoint also carries ``hf/``: rank 0's ``save_pretrained``
   export with the processor, which the driver copies to the output directory.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from ipl.models.loss import target_loss

log = logging.getLogger("ipl.train")


def _gpu_class() -> str | None:
    if not torch.cuda.is_available():
        return None
    return "ampere+" if torch.cuda.get_device_capability()[0] >= 8 else "volta"


def _rows(batch: dict) -> list[dict]:
    n = len(batch["messages"])
    return [{"id": str(batch["id"][i]), "messages": batch["messages"][i],
             "photos": list(batch["photos"][i]) if batch["photos"][i] is not None else []} for i in range(n)]


def _length(row: dict) -> int:
    """A row's length for grouping: its messages' characters (tracks the tokens; the photos follow
    one image policy)."""
    m = row["messages"]
    return len(m) if isinstance(m, str) else len(json.dumps(m, ensure_ascii=False))


def micro_batches(big_batches, micro: int, group: int, seed: int):
    """Lists of ``micro`` rows from Ray Data batches of ``micro * group`` rows. With ``group`` > 1 each
    batch's rows are sorted by :func:`_length`, cut into micro-batches (a last one short of ``micro``
    is dropped, as ``drop_last``), and those are taken in an order drawn from ``seed`` and the batch's
    index: the same order on every rank, whose batches follow one distribution, so the ranks' k-th
    micro-batches are of similar length and neither waits long for the other at the all-reduce."""
    import random

    for index, batch in enumerate(big_batches):
        rows = _rows(batch)
        if group > 1:
            rows = sorted(rows, key=_length)
        chunks = [rows[i: i + micro] for i in range(0, len(rows) - micro + 1, micro)]
        if group > 1:
            random.Random(seed * 1_000_003 + index).shuffle(chunks)
        yield from chunks


def _allreduce(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _to(batch: dict, device, dtype) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device)
        if k == "pixel_values" and dtype is not None:
            v = v.to(dtype)
        out[k] = v
    return out


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif hasattr(obj, "values"):
        for x in obj.values():
            yield from _tensors(x)


def vision_touch(model, dummy: dict) -> torch.Tensor:
    """A zero-valued term through the vision tower and merger.

    Every rank must produce gradients for the same parameters each step, or DeepSpeed's
    gradient reduction goes out of step between ranks (gloo: "Received data size doesn't match
    expected size"): a micro-batch without photos (extraction rows) leaves the merger without
    gradients. Adding ``0 * merger(dummy photo)`` gives it zero gradients instead of none."""
    out = model.get_image_features(dummy["pixel_values"], dummy["image_grid_thw"])
    return sum(t.float().sum() for t in _tensors(out) if t.is_floating_point()) * 0.0


def validate(engine, shard, collator, cfg, device, dtype) -> float:
    """Token-weighted validation loss over every worker's validation shard."""
    engine.eval()
    total, tokens = 0.0, 0
    limit = math.ceil(cfg.data.validation_rows / cfg.scaling.num_workers) if cfg.data.validation_rows else None
    with torch.no_grad():
        for i, batch in enumerate(shard.iter_batches(batch_size=cfg.optim.micro_batch_size, batch_format="numpy")):
            if limit and i * cfg.optim.micro_batch_size >= limit:
                break
            inputs = collator(_rows(batch))
            if inputs is None:
                continue
            loss, n = target_loss(engine, _to(inputs, device, dtype))
            total += float(loss) * n
            tokens += n
    engine.train()
    total, tokens = _allreduce([total, tokens], device)
    return total / tokens if tokens else float("nan")


SHM_COMM_OP = "deepspeed_shm_comm"


def skip_shm_comm_op() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shared-memory all-reduce op.

    On a CPU accelerator DeepSpeed's communication backend builds ``deepspeed_shm_comm`` with
    ninja when it starts (33 s of both cores on a fresh machine, every worker waiting on it),
    and uses it only for ``inference_all_reduce`` (tensor-parallel inference). Training's
    gradient all-reduce goes through torch.distributed (gloo) either way. Marking the op
    incompatible in DeepSpeed's own per-process table (``deepspeed.ops.__compatible_ops__``,
    which ``build_shm_op`` consults) makes the backend skip it. GPU runs never build it."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False


def train_loop(config: dict) -> None:
    # DeepSpeed's import probes torch's C++ extension toolchain, which warns "No CUDA runtime is found" on
    # every CPU worker: expected here, so not shown (errors still are)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from ipl.runtime import quiet_train_worker

    quiet_train_worker()
    import deepspeed
    import ray.train
    import ray.train.torch

    from ipl.models.vlm import load_vlm, save_image_policy
    from ipl.train.collate import Collator
    from ipl.train.config import TrainConfig
    from ipl.train.optim import build_optimizer, build_scheduler, freeze_vision

    cfg = TrainConfig.model_validate(config["cfg"])
    plan = config["plan"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if not cfg.scaling.use_gpu:
        torch.set_num_threads(cfg.scaling.torch_threads)
        skip_shm_comm_op()
    precision = cfg.resolve_precision(_gpu_class())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    vlm = load_vlm(plan["model_path"])
    model = vlm.model
    if cfg.model.freeze_vision:
        freeze_vision(model)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, plan["total_steps"])
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=cfg.deepspeed_config(precision))
    if rank == 0:  # Ray Train's start, the model load and DeepSpeed's set-up take a while: say where it stands
        print(f"[ipl.train] model loaded and DeepSpeed ZeRO-{cfg.zero_stage()} ready on "
              f"{ctx.get_world_size()} worker(s); streaming the training shard", flush=True)

    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            path, client = engine.load_checkpoint(d)
            if path is None:
                raise RuntimeError(f"rank {rank}: no DeepSpeed checkpoint in {d}")
            step = int(client["step"])
        if rank == 0:
            log.warning("resumed from step %d of %d", step, plan["total_steps"])
            with open(Path(plan["train_dir"]) / "resumes.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"from_step": step, "time": time.time()}) + "\n")

    from ipl.models.vlm import processor_policy

    # the image policy: the config's, else the base checkpoint's own (it goes into the hf/ export)
    policy = cfg.images or processor_policy(vlm.processor)
    collator = Collator(vlm.processor, cfg.data.max_length, policy=policy)
    dummy = vlm.processor.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    dummy = _to({"pixel_values": dummy["pixel_values"], "image_grid_thw": dummy["image_grid_thw"]}, device, dtype)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    total, spe, accum = plan["total_steps"], plan["steps_per_epoch"], cfg.optim.grad_accum
    window = {"loss": 0.0, "micro": 0, "samples": 0, "tokens": 0, "t0": time.monotonic()}
    started, first_step = time.monotonic(), step

    def report(final: bool = False) -> None:
        due_val = final or step % cfg.eval.validation_every == 0
        due_ckpt = final or step % cfg.checkpoint.every_steps == 0
        loss_sum, micro, samples, tokens = _allreduce(
            [window["loss"], window["micro"], window["samples"], window["tokens"]], device)
        elapsed = max(1e-9, time.monotonic() - window["t0"])
        metrics = {"step": step, "epoch": round(step / spe, 3), "total_steps": total,
                   "loss": loss_sum / micro if micro else None, "lr": scheduler.get_last_lr()[0],
                   "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed,
                   "dropped_too_long": collator.stats["dropped_too_long"], "truncated": collator.stats["truncated"],
                   "photos_dropped_for_length": collator.stats["photos_dropped_for_length"]}
        if due_val:
            metrics["val_loss"] = validate(engine, val_shard, collator, cfg, device, dtype)
        if rank == 0:  # every report in metrics.jsonl (Ray Train keeps only the checkpoints' metrics), progress
            with open(Path(plan["train_dir"]) / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(metrics) + "\n")
            eta = (total - step) * (time.monotonic() - started) / max(1, step - first_step)
            print(f"[ipl.train] step {step}/{total} epoch {metrics['epoch']:.2f} loss {metrics['loss'] or 0:.4f} "
                  f"lr {metrics['lr']:.2e} {metrics['samples_per_s']:.1f} samples/s {metrics['tokens_per_s']:.0f} "
                  f"tokens/s" + (f" val_loss {metrics['val_loss']:.4f}" if due_val else "") + f" ETA {eta:.0f}s",
                  flush=True)
        if not due_ckpt:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory(prefix="ipl-ckpt-") as tmp:
                engine.save_checkpoint(tmp, tag=f"step{step:08d}", client_state={"step": step})
                if final and rank == 0:
                    hf = Path(tmp) / "hf"
                    engine.module.save_pretrained(hf)
                    vlm.processor.save_pretrained(hf)  # with the policy's min/max pixels
                    save_image_policy(hf, policy)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_step{step:08d}")
        window.update(loss=0.0, micro=0, samples=0, tokens=0, t0=time.monotonic())

    while step < total:
        epoch, skip = step // spe, (step % spe) * accum
        group = max(1, cfg.data.group_by_length)
        it = train_shard.iter_batches(batch_size=cfg.optim.micro_batch_size * group, batch_format="numpy",
                                      local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
                                      local_shuffle_seed=cfg.optim.seed + epoch)
        for i, rows in enumerate(micro_batches(it, cfg.optim.micro_batch_size, group, cfg.optim.seed + epoch)):
            if i < skip:
                continue  # resumed mid-epoch: these micro-batches were trained on before
            if i >= spe * accum:
                break
            inputs = collator(rows)
            inputs = _to(inputs, device, dtype) if inputs is not None else None
            if inputs is None:  # every row too long: a zero loss keeps the ranks in step
                loss = sum(p.sum() for p in engine.module.parameters() if p.requires_grad) * 0.0
            else:
                loss, _ = target_loss(engine, inputs)
                window["samples"] += int(inputs["input_ids"].shape[0])
                window["tokens"] += int(inputs["attention_mask"].sum())
                if "pixel_values" not in inputs:
                    loss = loss + vision_touch(engine.module, dummy)
            engine.backward(loss)
            engine.step()
            window["loss"] += loss.detach().item()
            window["micro"] += 1
            if (i + 1) % accum:
                continue
            step += 1
            if cfg.chaos.kill_at_step == step and rank == cfg.chaos.rank:
                marker = Path(plan["train_dir"]) / f"chaos-killed-step{step}"
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(str(os.getpid()))
                    time.sleep(cfg.chaos.delay_s)
                    os.kill(os.getpid(), signal.SIGKILL)
            if rank == 0 and step == first_step + 1 and total > step:  # the start can take half a minute
                print(f"[ipl.train] step {step}/{total}: the first step took {time.monotonic() - started:.0f}s "
                      f"(ingest start, warm-up); progress every {cfg.eval.report_every} steps", flush=True)
            if step >= total:
                break
            if step % cfg.eval.report_every == 0 or step % cfg.checkpoint.every_steps == 0 \
                    or step % cfg.eval.validation_every == 0:
                report()
        if step < total and step % spe:
            raise RuntimeError(f"rank {rank}: the training shard ran out at step {step} ({spe} steps planned per "
                               f"epoch): the split changed since the plan was made")
    report(final=True)
    if rank == 0:
        Path(plan["train_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(plan["train_dir"]) / "collator_stats.json").write_text(json.dumps(dict(collator.stats)))
