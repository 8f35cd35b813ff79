"""Benchmark of the training loss: logits at target positions only against the model's own loss.

    .venv/bin/python bench/loss.py --run runs/demo            # needs `ipl synth` + `ipl prepare` there

The same base model (``<run>/models/vlm-base``, vision tower frozen as in ``ipl train``), the same
batches, one torch thread, alternating arms ``--repeats`` times (best time of each kept):

* ``own``: ``model(**batch).loss`` (transformers' loss over logits at every position);
* ``target``: :func:`ipl.models.loss.target_loss` (logits only where a row has a target).

Two kinds of batch: the tiny VLM's copy pretraining (16 conversations, ``ipl synth``) and the
instruction rows of ``<run>/instructions/split=train`` through the fine-tuning collator
(micro-batch 8). Prints ms per optimizer step of each arm, the ratio, the share of positions whose
logits are still computed, and that both losses agree.
"""
from __future__ import annotations

import argparse
import glob
import json
import random
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq
    import torch

    from ipl.models.lm_pretrain import CopyBatches, Vocabulary
    from ipl.models.loss import target_loss, target_positions
    from ipl.models.vlm import load_vlm, processor_policy
    from ipl.train.collate import Collator
    from ipl.train.loop import _rows

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    files = sorted(glob.glob(str(run / "instructions" / "split=train" / "*.parquet")))
    if not (run / "models" / "vlm-base").is_dir() or not files:
        sys.exit(f"{run}: no models/vlm-base or instructions/split=train: run `ipl synth` and `ipl prepare` first")
    vlm = load_vlm(run / "models" / "vlm-base")
    model = vlm.model
    model.train()
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    copy = CopyBatches(vlm.tokenizer, Vocabulary.build(), seed=0)
    collator = Collator(vlm.processor, 512, policy=processor_policy(vlm.processor, 1))
    table = pq.read_table(files[0]).slice(0, 8 * args.batches).to_pydict()
    order = list(range(len(table["id"])))
    random.Random(0).shuffle(order)
    kinds = {
        "copy pretraining (16)": [copy(16) for _ in range(args.batches)],
        "fine-tuning (8)": [collator(_rows({k: [table[k][j] for j in order[i:i + 8]] for k in ("id", "messages", "photos")}))
                            for i in range(0, len(order), 8)],
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
    arms = {"own": lambda b: model(**b).loss, "target": lambda b: target_loss(model, b)[0]}
    out = {}
    for kind, batches in kinds.items():
        batches = [b for b in batches if b is not None]
        with torch.no_grad():
            diff = max(abs(float(arms["own"](b)) - float(arms["target"](b))) for b in batches[:5])
        share = sum(len(target_positions(b["labels"])) for b in batches) / sum(b["labels"].shape[1] - 1 for b in batches)
        best = {a: float("inf") for a in arms}
        for _ in range(args.repeats):
            for arm, fn in arms.items():
                t0 = time.perf_counter()
                for b in batches:
                    fn(b).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                best[arm] = min(best[arm], (time.perf_counter() - t0) / len(batches))
        out[kind] = {"own_ms": round(best["own"] * 1000, 1), "target_ms": round(best["target"] * 1000, 1),
                     "ratio": round(best["own"] / best["target"], 2), "positions_kept": round(share, 3),
                     "max_loss_difference": diff}
        print(f"{kind}: own loss {out[kind]['own_ms']} ms/step, target positions {out[kind]['target_ms']} ms/step "
              f"({out[kind]['ratio']}x); logits at {share:.0%} of the positions; losses differ by at most {diff:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
