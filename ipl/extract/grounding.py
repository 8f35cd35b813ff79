"""Grounding: is an attribute value stated in the listing text, and where?

Matching is on NFKC, lower-cased text and tolerates spaces/hyphens inside values
(``Mate 10 Pro`` ~ ``mate10pro`` ~ ``MATE-10 PRO``) and units (``64GB`` ~ ``64 gb``).
Latin values must sit on token boundaries (``Red`` is not found in ``bred``); values of at
most two characters (sizes ``S``/``M``) are matched case-sensitively so ``it's`` is not a
size. CJK values match anywhere.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

from ipl.text.normalize import has_cjk, normalize

_GAP = r"[\s\-_.]*"


@lru_cache(maxsize=65536)
def value_pattern(value: str) -> Optional[re.Pattern]:
    v = normalize(value)
    if not v:
        return None
    short = len(v) <= 2 and not has_cjk(v)
    chars = [c for c in (v if short else v.lower()) if not c.isspace() and c not in "-_."]
    if not chars:
        return None
    body = _GAP.join(re.escape(c) for c in chars)
    if has_cjk(v):
        return re.compile(body)
    left = r"(?<![A-Za-z0-9'’])" if short else r"(?<![a-z0-9])"
    right = r"(?![A-Za-z0-9])" if short else r"(?![a-z0-9])"
    return re.compile(left + body + right)


def find_value(value: str, text: str, lowered: Optional[str] = None) -> int:
    """Offset of ``value`` in normalised ``text`` (-1 if absent). ``lowered`` may pass
    ``normalize(text).lower()`` precomputed."""
    pat = value_pattern(value)
    if pat is None:
        return -1
    short = len(normalize(value)) <= 2 and not has_cjk(value)
    hay = normalize(text) if short else (lowered if lowered is not None else normalize(text).lower())
    m = pat.search(hay)
    return m.start() if m else -1


def is_grounded(value: str, text: str) -> bool:
    return find_value(value, text) >= 0
