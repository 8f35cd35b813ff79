"""LLaMA-Factory export of the instruction data (messages + images, "sharegpt" format).

Writes ``<out>/images/<listing_id>_<k>.jpg``, ``<out>/<split>/part-*.jsonl`` with one
``{"messages": [...], "images": [...]}`` object per line (the user turn carries one
``<image>`` placeholder per photo), and ``<out>/dataset_info.json`` declaring the datasets
``ipl_train`` and ``ipl_validation``. Point LLaMA-Factory's ``dataset_dir`` at ``<out>``.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

DATASET_INFO = {
    f"ipl_{split}": {
        "file_name": split,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
    }
    for split in ("train", "validation")
}


def to_sharegpt(messages: list[dict], image_paths: list[str]) -> dict:
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            text = "".join("<image>" if part.get("type") == "image" else part.get("text", "") for part in content)
        else:
            text = content
        out.append({"role": m["role"], "content": text})
    return {"messages": out, "images": image_paths}


def write_batch(batch: dict, out_dir: str, split: str) -> dict:
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for lid, msgs, photos in zip(batch["listing_id"], batch["messages"], batch["photos"]):
        paths = []
        for k, data in enumerate(list(photos) if photos is not None else []):
            rel = f"images/{lid}_{k}.jpg"
            dest = out / rel
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
                tmp.write_bytes(bytes(data))
                os.replace(tmp, dest)
            paths.append(rel)
        lines.append(json.dumps(to_sharegpt(json.loads(msgs), paths), ensure_ascii=False))
    part = out / split / f"part-{uuid.uuid4().hex[:12]}.jsonl"
    part.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return {"rows": [len(lines)]}


def export_llamafactory(instructions_dir: Path, out_dir: Path) -> dict:
    """Export the instruction Parquet (by split) to ``out_dir``; returns the rows per split.

    Runs in the driver, one row group at a time: the work is writing files, and Ray tasks
    would each pay the worker start-up for no parallel gain on the disk."""
    import pyarrow.parquet as pq

    counts = {}
    for split in ("train", "validation"):
        src = instructions_dir / f"split={split}"
        files = sorted(src.glob("*.parquet")) if src.exists() else []
        counts[split] = 0
        for f in files:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                table = pf.read_row_group(i, columns=["listing_id", "messages", "photos"])
                batch = {name: table.column(name).to_pylist() for name in table.column_names}
                counts[split] += write_batch(batch, str(out_dir), split)["rows"][0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2))
    return {"dir": str(out_dir), "rows": counts}
