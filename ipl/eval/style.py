"""The casual C2C register: does a description sound like a seller, not an advert?

``Register(first_person, marketing)``: casual when at least one first-person seller phrase
is present and no marketing superlative is. Latin phrases match on word boundaries,
case-insensitively; CJK phrases and punctuation runs (``!!``) match anywhere. The default
lists are :class:`ipl.eval.config.StyleConfig`'s.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Optional


def _pattern(phrases: Iterable[str]) -> Optional[re.Pattern]:
    parts = []
    for p in sorted({p.strip() for p in phrases if p and p.strip()}, key=len, reverse=True):
        body = r"[\s\-]+".join(re.escape(w) for w in re.split(r"[\s\-]+", p) if w)
        if re.match(r"\w", p, re.ASCII):
            body = r"(?<!\w)" + body
        if re.search(r"\w$", p, re.ASCII):
            body = body + r"(?!\w)"
        parts.append(body)
    return re.compile("|".join(parts), re.I) if parts else None


class Register:
    def __init__(self, first_person: Iterable[str], marketing: Iterable[str]):
        self.first_person = _pattern(first_person)
        self.marketing = _pattern(marketing)

    def marketing_phrases(self, text: str) -> list[str]:
        return [m.group(0) for m in self.marketing.finditer(text)] if self.marketing else []

    def is_first_person(self, text: str) -> bool:
        return bool(self.first_person.search(text)) if self.first_person else True

    def is_casual(self, text: str) -> bool:
        return self.is_first_person(text) and not self.marketing_phrases(text)

    def summary(self, texts: list[str]) -> dict:
        n = len(texts)
        first = sum(self.is_first_person(t) for t in texts)
        adverts = sum(bool(self.marketing_phrases(t)) for t in texts)
        casual = sum(self.is_casual(t) for t in texts)
        return {"descriptions": n, "casual": casual / n if n else 0.0, "first_person": first / n if n else 0.0,
                "marketing": adverts / n if n else 0.0}


@lru_cache(maxsize=1)
def default_register() -> Register:
    from ipl.eval.config import StyleConfig

    s = StyleConfig()
    return Register(s.first_person, s.marketing)
