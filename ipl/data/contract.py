"""Column contracts: stages declare the columns they need; a missing one fails loudly."""
from __future__ import annotations

import numpy as np

from typing import Iterable, Mapping


class MissingColumns(KeyError):
    """A batch or dataset lacks columns a stage needs."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def require_columns(batch: Mapping, needed: Iterable[str], stage: str, source: str = "") -> None:
    missing = [c for c in needed if c not in batch]
    if missing:
        where = f" in {source}" if source else ""
        raise MissingColumns(
            f"stage '{stage}' needs the column(s) {missing}{where}; present: {sorted(batch.keys())}"
        )


def is_null(value) -> bool:
    """None, or the NaN that Ray's numpy batches give for values of an all-null column."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(value != value)  # NaN
    return False  # strings, numbers, arrays (a list value is never "null")


def nulls_to_none(values) -> list:
    return [None if is_null(v) else v for v in values]
