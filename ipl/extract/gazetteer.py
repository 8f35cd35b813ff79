"""Gazetteer extractor: known values of each category's attributes, matched in the text.

Fast and deterministic; used as the CPU extractor and as a check on the LLM. For each key
it reports the longest known value found (ties: the earliest), with its character offset
in the normalised text (template mining uses the offsets). Keys with a regex in the
library (Storage, Size) are matched by pattern.

:func:`value_precision_filter` is the check of values a library learns from a structured
column (``min_precision``): what this extractor would extract from those listings' texts,
against their column.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ipl.catalog.library import GENERIC, AttributeLibrary, LibraryConfig, LibrarySource, build_library
from ipl.extract.grounding import value_pattern
from ipl.text.normalize import has_cjk, match_key, normalize


@dataclass(frozen=True)
class Found:
    value: str
    pos: int
    source: str = "gazetteer"


class Gazetteer:
    def __init__(self, library: AttributeLibrary):
        self.library = library
        self._patterns = {k: re.compile(p, re.I) for k, p in library.patterns.items()}

    @lru_cache(maxsize=4096)
    def _values(self, category: str, key: str) -> tuple[tuple[str, re.Pattern, bool], ...]:
        vals = sorted(self.library.values_for(category, key), key=lambda v: (-len(v), v))
        out = []
        for v in vals:
            pat = value_pattern(v)
            if pat is not None:
                out.append((v, pat, len(normalize(v)) <= 2 and not has_cjk(v)))
        return tuple(out)

    def extract(self, text: str, category: str) -> dict[str, Found]:
        t = normalize(text)
        low = t.lower()
        found: dict[str, Found] = {}
        for key in self.library.keys_for(category):
            best = None
            for value, pat, short in self._values(category, key):
                if best is not None and len(value) < len(best.value):
                    break  # sorted longest first: a shorter value cannot win
                m = pat.search(t if short else low)
                if m and (best is None or m.start() < best.pos):
                    best = Found(value, m.start())
            if best is None and key in self._patterns:
                m = self._patterns[key].search(t)
                if m:
                    best = Found(m.group(0).strip(), m.start(), "pattern")
            if best is not None:
                found[key] = best
        return found


def value_precision_filter(learned: AttributeLibrary, src: LibrarySource, rows: list[dict]) -> dict[str, dict]:
    """Drop from ``learned`` each value the gazetteer extracts from the rows' texts (rows with a
    value in the column; at least 3 and ``min_count`` extractions) in agreement with the column
    less than ``src.min_precision`` of the time; returns the dropped values with their counts."""
    if rows and "text" not in rows[0]:
        raise ValueError(f"library source column={src.column}: min_precision needs the listings' text")
    gazetteer = Gazetteer(learned)
    extracted, agreed = Counter(), Counter()
    for r in rows:
        truth = r.get(src.column)
        if not truth or not str(truth).strip():
            continue  # a row without the column says nothing of whether an extracted value is right
        category = r.get("category") if src.per_category else GENERIC
        found = gazetteer.extract(str(r.get("text") or ""), category or GENERIC).get(src.key)
        if found is None:
            continue
        extracted[found.value] += 1
        agreed[found.value] += match_key(found.value) == match_key(str(truth))
    dropped = {}
    for value, n in extracted.items():  # judged on 3+ extractions: one or two say too little
        if n >= max(3, src.min_count) and agreed[value] / n < src.min_precision:
            dropped[value] = {"extracted": n, "agreed": agreed[value]}
            for keys in learned.values.values():
                keys.get(src.key, set()).discard(value)
    return dropped


def build_checked_library(cfg: LibraryConfig, rows: Optional[list[dict]] = None) -> AttributeLibrary:
    """:func:`ipl.catalog.library.build_library` with the gazetteer's check of learned values
    (``min_precision`` of a column source)."""
    return build_library(cfg, rows, value_precision_filter)
