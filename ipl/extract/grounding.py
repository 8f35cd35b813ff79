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
from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks

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


_TERMS = RiskTerms()


def grounded_values(values: dict, description: str, keys: list[str], max_chars: int) -> dict[str, str]:
    """The values whose key is in the template and which the description states."""
    by_lower = {k.lower(): k for k in keys}
    low = normalize(description or "").lower()
    out = {}
    for raw_key, raw in (values or {}).items():
        key = by_lower.get(str(raw_key).strip().lower())
        if key is None or raw is None or isinstance(raw, (dict, list)):
            continue
        value = normalize(str(raw)).strip()
        if not value or len(value) > max_chars or any(c in value for c in "<>{}\n"):
            continue
        if find_pii(value) or find_risks(value, _TERMS):
            continue
        if find_value(value, description or "", low) < 0:
            continue
        out[key] = value
    return out
