"""The held-out listings of the ablation, none of which the VLM was trained on.

The pool is the listings of the SKUs in the instruction validation split (the split is by
SKU, so the VLM never saw them), in a stable hashed order, divided by hash parity into:

* ``indexed_sku``: unseen photos of indexed SKUs — the query listing itself is removed from
  the retrieval hits (as if its photos were new), while the other listings of its SKU stay
  (the SKU must have at least one other listing in the index);
* ``unseen_sku``: unseen SKUs — every listing of the query's SKU is removed from the hits, as
  if it had never been listed, so only similar products can be references.

Each example is a dict with ``listing_id, sku_id, spu_id, category, language, description,
attributes`` (ground truth), ``photos`` (bytes) and ``exclude`` (what retrieval must not return:
``{"listing_id": ...}`` or ``{"sku_id": ...}``).
"""
from __future__ import annotations

import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Optional

from ipl.data.instructions import split_column
from ipl.index.search import resolve_version_dir
from ipl.serve.samples import read_examples

log = logging.getLogger("ipl.eval")


def indexed_listings(index_root: Path) -> dict[str, str]:
    """listing_id -> sku_id of the current index version."""
    import pyarrow.parquet as pq

    out: dict[str, str] = {}
    for f in sorted(resolve_version_dir(index_root).glob("shard-*.parquet")):
        t = pq.read_table(f, columns=["listing_id", "sku_id"])
        out.update(zip(t.column("listing_id").to_pylist(), t.column("sku_id").to_pylist()))
    return out


def load_sets(listings: Path, index_root: Path, instructions: Path, indexed_n: int, unseen_n: int,
              language: Optional[str] = None) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The example sets and, for each set left empty, why."""
    import pyarrow.dataset as pds

    if not listings.is_dir():
        raise FileNotFoundError(f"{listings}: no cleaned listings (run `ipl prepare`)")
    if not index_root.exists():
        raise FileNotFoundError(f"index {index_root}: missing (run `ipl index`)")
    validation_skus = split_column(instructions, "validation", "group")
    trained = split_column(instructions, "train", "listing_id")
    wanted = {"indexed_sku": indexed_n, "unseen_sku": unseen_n}
    if not validation_skus:
        why = f"no validation split under {instructions} (run `ipl prepare`)"
        return {}, {k: why for k, n in wanted.items() if n}
    in_index = indexed_listings(index_root)
    per_sku = Counter(in_index.values())
    data = pds.dataset(str(listings), format="parquet")
    meta = data.to_table(columns=["listing_id", "sku_id", "language"])
    pool = sorted(((lid, sku) for lid, sku, lang in zip(meta.column("listing_id").to_pylist(),
                                                        meta.column("sku_id").to_pylist(),
                                                        meta.column("language").to_pylist())
                   if sku in validation_skus and lid not in trained and (language is None or lang == language)),
                  key=lambda p: zlib.crc32(p[0].encode()))
    chosen: dict[str, list[tuple[str, str]]] = {"indexed_sku": [], "unseen_sku": []}
    for lid, sku in pool:
        others = per_sku[sku] - (lid in in_index)
        name = "indexed_sku" if zlib.crc32(f"set:{lid}".encode()) % 2 == 0 and others > 0 else "unseen_sku"
        if len(chosen[name]) < wanted[name]:
            chosen[name].append((lid, sku))
    sets, skipped = {}, {}
    for name, picks in chosen.items():
        if not wanted[name]:
            continue
        rows = read_examples(data, [lid for lid, _ in picks]) if picks else []
        for r in rows:
            r["exclude"] = {"listing_id": r["listing_id"]} if name == "indexed_sku" else {"sku_id": r["sku_id"]}
        if rows:
            sets[name] = rows
        else:
            skipped[name] = "no listing of a validation-split SKU" + (" with another listing in the index"
                                                                     if name == "indexed_sku" else "")
    return sets, skipped
