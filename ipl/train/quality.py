"""Did the fine-tuned model learn? Attribute recall of its generations on held-out rows.

``recall_check(cfg, model_dir)`` reloads the exported model with transformers (the same
loader serving uses), takes validation ``desc_reference`` rows (their SKUs never appear in
training), generates a description from the photos + category + template + reference
attributes, and counts the reference values the description states (grounding match:
case, spacing and units tolerated). Only product- and SKU-level values count (the run's key
levels, :mod:`ipl.catalog.levels`): listing-level ones such as the condition legitimately
differ between two listings of the same SKU. It also reports the
share of generations in the casual seller register (first-person phrasing, no marketing
superlatives).
"""
from __future__ import annotations

import json
import re
from typing import Optional

from ipl.extract.grounding import is_grounded

_REFERENCE = re.compile(r"<reference>(.*?)</reference>", re.S)
_REFERENCE_SENTENCE = re.compile(r"\s*(Facts about this item|本商品的已确认信息)[^<]*<reference>.*?</reference>", re.S)


def reference_of(messages: list[dict]) -> Optional[dict]:
    """The reference attributes inside the user turn's ``<reference>`` tags."""
    for m in messages:
        content = m["content"]
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        for t in texts:
            found = _REFERENCE.search(t or "")
            if found:
                try:
                    return json.loads(found.group(1))
                except json.JSONDecodeError:
                    return None
    return None


def without_reference(messages: list[dict]) -> list[dict]:
    """The messages with the reference sentence removed from the user turn."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{**p, "text": _REFERENCE_SENTENCE.sub("", p["text"]).rstrip()} if p.get("type") == "text" else p
                       for p in content]
        out.append({**m, "content": content})
    return out


def run_levels(cfg):
    """The key levels of the run's templates.yaml (the defaults when there is none)."""
    from ipl.catalog.levels import KeyLevels
    from ipl.catalog.templates import load_levels

    path = cfg.run.dir / "templates.yaml"
    return load_levels(path) if path.is_file() else KeyLevels()


def is_casual(text: str) -> bool:
    """The casual seller register, with ``ipl eval``'s default phrase lists."""
    from ipl.eval.style import default_register

    return default_register().is_casual(text)


def score(generated: str, reference: dict, keys: list[str]) -> tuple[int, int]:
    values = [str(reference[k]) for k in keys if reference.get(k)]
    return sum(is_grounded(v, generated) for v in values), len(values)


def recall_check_remote(cfg, model_dir, rows: Optional[int] = None) -> dict:
    """:func:`recall_check` as a Ray task on a GPU worker (one GPU) when training used GPUs, so
    the 7B never loads on the driver, in the model's dtype (:func:`ipl.devices.resolve_dtype`);
    in this process on a CPU-only run (the driver's threads are the CPUs there are)."""
    if not cfg.scaling.use_gpu:
        return recall_check(cfg, model_dir, rows)
    import ray

    task = ray.remote(recall_check).options(num_cpus=1, num_gpus=1, max_retries=0)
    return ray.get(task.remote(cfg, str(model_dir), rows))


def recall_check(cfg, model_dir, rows: Optional[int] = None) -> dict:
    import pyarrow.dataset as ds
    import torch

    from ipl.devices import placement_device, resolve_dtype

    from ipl.generate.local import generate_batch
    from ipl.models.vlm import load_vlm
    from ipl.train.collate import limit_images
    from ipl.train.stage import split_dir

    n = rows or cfg.eval.recall_rows
    table = ds.dataset(split_dir(cfg, "validation"), format="parquet").to_table(
        columns=["id", "group", "task", "messages", "photos"], filter=ds.field("task") == "desc_reference")
    table = table.slice(0, n)
    if table.num_rows == 0:
        return {"rows": 0, "values": 0, "found": 0, "recall": 0.0, "casual": 0.0}
    device = placement_device()
    vlm = load_vlm(model_dir, dtype=getattr(torch, resolve_dtype("auto", device)), device=device)
    requests, refs = [], []
    for messages, photos, group in zip(table["messages"].to_pylist(), table["photos"].to_pylist(),
                                       table["group"].to_pylist()):
        messages = json.loads(messages)
        refs.append(reference_of(messages) or {})
        photos = (photos or [])[: vlm.images.max_photos]  # the exported model's policy
        prompt = limit_images([m for m in messages if m["role"] != "assistant"], len(photos))
        requests.append((prompt, photos))
    generated = generate_batch(vlm, requests, cfg.eval.max_new_tokens)
    # the same rows without the reference: what the model states from photos + template alone
    bare = generate_batch(vlm, [(without_reference(m), p) for m, p in requests], cfg.eval.max_new_tokens)
    levels = run_levels(cfg)
    found_bare = sum(score(text, ref, levels.scored(list(ref)))[0] for text, ref in zip(bare, refs))
    found = total = casual = 0
    per_key: dict[str, list[int]] = {}
    for text, ref in zip(generated, refs):
        keys = levels.scored(list(ref))
        f, t = score(text, ref, keys)
        found, total = found + f, total + t
        casual += is_casual(text)
        for k in keys:
            if ref.get(k):
                hit = per_key.setdefault(k, [0, 0])
                hit[0] += is_grounded(str(ref[k]), text)
                hit[1] += 1
    return {"rows": len(generated), "values": total, "found": found, "recall": found / total if total else 0.0,
            "recall_without_reference": found_bare / total if total else 0.0,
            "casual": casual / len(generated),
            "per_key": {k: round(a / b, 3) for k, (a, b) in sorted(per_key.items())},
            "example": {"group": table["group"][0].as_py(), "reference": refs[0], "generated": generated[0]}}
