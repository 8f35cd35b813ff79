"""Held-out listings to try the service on: cleaned listings that are *not* in the served
index although their SKU is (the index stage held them out), with their ground truth.

``held_out_examples(listings_dir, index_root, n)`` returns up to ``n`` dicts with
``listing_id, sku_id, spu_id, category, language, description, attributes`` (the listing's
true values) and ``photos`` (bytes).
``ipl serve once=true``, ``ipl demo``, the integration tests and ``bench/serve.py`` use it.
"""
from __future__ import annotations

import json
from pathlib import Path

from ipl.index.search import resolve_version_dir

EXAMPLE_COLUMNS = ["listing_id", "sku_id", "spu_id", "category", "language", "description", "attributes", "photos"]


def held_out_examples(listings_dir: Path, index_root: Path, n: int = 8) -> list[dict]:
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    version = resolve_version_dir(Path(index_root))
    indexed_ids, indexed_skus = set(), set()
    for f in sorted(version.glob("shard-*.parquet")):
        t = pq.read_table(f, columns=["listing_id", "sku_id"])
        indexed_ids.update(t.column("listing_id").to_pylist())
        indexed_skus.update(t.column("sku_id").to_pylist())
    data = pds.dataset(str(listings_dir), format="parquet")
    meta = data.to_table(columns=["listing_id", "sku_id"])
    wanted = [lid for lid, sku in zip(meta.column("listing_id").to_pylist(), meta.column("sku_id").to_pylist())
              if lid not in indexed_ids and sku in indexed_skus][:n]
    if not wanted:
        return []
    return read_examples(data, wanted)


def read_examples(data, wanted: list[str]) -> list[dict]:
    """The listings ``wanted`` (ids, in that order) of a Parquet dataset, as example dicts."""
    import pyarrow.compute as pc

    rows = data.to_table(columns=EXAMPLE_COLUMNS, filter=pc.field("listing_id").isin(wanted)).to_pylist()
    order = {lid: i for i, lid in enumerate(wanted)}
    out = []
    for r in sorted(rows, key=lambda r: order[r["listing_id"]]):
        attrs = json.loads(r["attributes"]) if isinstance(r["attributes"], str) else (r["attributes"] or {})
        out.append({**r, "attributes": attrs, "photos": [bytes(p) for p in (r["photos"] or [])]})
    return [r for r in out if r["photos"]]
