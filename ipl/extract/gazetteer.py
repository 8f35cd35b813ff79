"""Gazetteer extractor: known values of each category's attributes, matched in the text.

Fast and deterministic; used as the CPU extractor and as a check on the LLM. For each key
it reports the longest known value found (ties: the earliest), with its character offset
in the normalised text (template mining uses the offsets). Keys with a regex in the
library (Storage, Size) are matched by pattern.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ipl.catalog.library import AttributeLibrary
from ipl.extract.grounding import value_pattern
from ipl.text.normalize import has_cjk, normalize


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
