"""Text normalisation (CJK aware): NFKC, whitespace, and a key form for matching values.

``normalize(text)`` is what every text filter sees: NFKC folds full-width digits and
letters (``１３８`` -> ``138``), compatibility forms and ideographic spaces; whitespace runs
collapse. ``match_key(text)`` is the form used to ground attribute values in text:
lower-case, no spaces, hyphens or punctuation (``Mate 10 Pro`` ~ ``mate10pro``).
"""
from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_NON_KEY = re.compile(r"[\s\-_.,，。、:：;；!！?？'\"“”‘’()（）\[\]【】/\\|+~·•*#]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize(text: str | None) -> str:
    """NFKC + collapsed whitespace; None becomes ''."""
    if not text:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFKC", str(text))).strip()


def match_key(text: str | None) -> str:
    """Lower-case NFKC text without spaces, hyphens and punctuation."""
    return _NON_KEY.sub("", normalize(text).lower())


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text or ""))


def special_char_ratio(text: str) -> float:
    """Share of characters that are neither letters/digits (any script) nor whitespace nor
    ordinary punctuation."""
    if not text:
        return 0.0
    ordinary = set(",.!?;:'\"()-/&%+，。！？；：、（）“”‘’…~")
    special = sum(1 for ch in text if not (ch.isalnum() or ch.isspace() or ch in ordinary))
    return special / len(text)


def text_length(text: str) -> int:
    """Length for the too-short/too-long filters: a CJK character counts as two."""
    return len(text) + len(_CJK.findall(text))
