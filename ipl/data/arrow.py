"""Typed Arrow tables for writing: numpy batches -> pyarrow with explicit types for known columns.

Ray infers Arrow types per batch; an all-null column becomes ``null`` and numpy arrays of
lists can fall back to pickled objects, which later reads refuse. ``to_table`` is the last
step before every write of the data pipeline.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ipl.data.contract import is_null

TYPES = {
    "listing_id": pa.string(), "category": pa.string(), "description": pa.string(), "title": pa.string(),
    "text": pa.string(), "status": pa.string(), "drop_reason": pa.string(), "drop_detail": pa.string(),
    "error": pa.string(), "language": pa.string(), "dirty_reason": pa.string(),
    "risk_flags": pa.list_(pa.string()), "pii": pa.list_(pa.string()), "photos": pa.list_(pa.binary()),
    "photo_paths": pa.list_(pa.string()), "clip_score": pa.float32(), "extracted": pa.string(),
    "extracted_meta": pa.string(), "extract_stats": pa.string(), "messages": pa.string(), "target": pa.string(),
    "fallback": pa.string(), "task": pa.string(), "split": pa.string(), "group": pa.string(), "id": pa.string(),
}
LIST_COLUMNS = {"risk_flags", "pii", "photos", "photo_paths"}


def _column(name: str, values) -> pa.Array:
    typ = TYPES.get(name)
    if name in LIST_COLUMNS:
        rows = [None if (v is None or (isinstance(v, float) and v != v)) else [bytes(x) if name == "photos" else str(x)
                                                                               for x in v] for v in values]
        return pa.array(rows, type=typ)
    if typ is not None:
        if pa.types.is_floating(typ):
            return pa.array(np.asarray(values, dtype=np.float32), type=typ)
        return pa.array([None if is_null(v) else str(v) for v in values], type=typ)
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim > 1:  # fixed-size vectors: list<item>
            return pa.array(list(values))
        return pa.array(values)
    return pa.array([None if is_null(v) else v for v in values])


def plain_lists(batch: dict) -> dict:
    """The batch with its list columns as Python lists of lists: Ray turns an Arrow ``list<string>``
    column into numpy arrays per row and cannot turn those back into Arrow (it pickles the column,
    with a warning); plain lists convert to a proper list type. Every dict-returning stage that
    passes such a column on ends with this."""
    for name in LIST_COLUMNS & set(batch):
        batch[name] = [None if v is None or (isinstance(v, float) and v != v) else list(v) for v in batch[name]]
    return batch


def to_table(batch: dict) -> pa.Table:
    return pa.table({name: _column(name, values) for name, values in batch.items()})
