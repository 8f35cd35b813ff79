"""Does a text state an attribute value, or another value of the same key?

``AttributeMatcher(synonyms)`` is the one matcher of the project: the evaluation scores
descriptions with it and serving verifies drafts with it. ``states(value, text)``: the value
or a synonym is in the text, matched like grounding (:mod:`ipl.extract.grounding`: NFKC,
case-folded, spaces/hyphens/units tolerated, token boundaries for Latin values).
``contradictions(text, truth, vocabulary)``: the other known values of a key that the text
states, skipping synonyms and parts of the true value (``iPhone 13`` inside ``iPhone 13 Pro``).
``across_categories(vocabulary, category)``: the values a description of ``category`` could
wrongly state: the category's own, then every other category's values of the same keys.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.grounding import find_value
from ipl.text.normalize import normalize


def value_key(value: str) -> str:
    """The comparison form of a value: NFKC, lower-case, without spaces, hyphens, underscores, dots."""
    return "".join(c for c in normalize(str(value)).lower() if not c.isspace() and c not in "-_.")


def across_categories(vocabulary: Mapping[str, Mapping[str, Iterable[str]]], category: Optional[str]
                      ) -> dict[str, list[str]]:
    """Key -> the known values of ``category`` first, then those of the same key in every other
    category (each once). A tiny or a 7B model alike can write a brand it learned from another
    category ("Letting go of my Adidas" for a laptop): it is still a wrong Brand, so the guard blocks
    it and the verification and the evaluation count it, which the category's own list alone
    missed. The category's values come first so that a capped list (``evidence.max_blocked``)
    keeps them."""
    def ordered(values: Iterable[str]) -> dict[str, None]:  # a set (no order of its own) is sorted
        values = sorted(map(str, values)) if isinstance(values, (set, frozenset)) else map(str, values)
        return dict.fromkeys(values)

    own = vocabulary.get(category or "", {}) or {}
    out: dict[str, dict[str, None]] = {k: ordered(v) for k, v in own.items()}
    for other, keys in sorted(vocabulary.items()):
        if other == category:
            continue
        for key, values in keys.items():
            if key in out:
                out[key].update(ordered(values))
    return {k: list(v) for k, v in out.items()}


class AttributeMatcher:
    def __init__(self, synonyms: Iterable[Sequence[str]] = ()):
        self._groups: dict[str, set[str]] = {}
        for group in synonyms:
            forms = {str(v) for v in group if str(v).strip()}
            merged = set(forms)
            for f in forms:
                merged |= self._groups.get(value_key(f), set())
            for f in merged:
                self._groups[value_key(f)] = merged

    def forms(self, value: str) -> set[str]:
        """The value and its synonyms."""
        return {str(value)} | self._groups.get(value_key(value), set())

    def same(self, a: str, b: str) -> bool:
        return value_key(a) == value_key(b) or value_key(b) in {value_key(f) for f in self.forms(a)}

    def states(self, value: str, text: str) -> bool:
        lowered = normalize(text).lower()
        return any(find_value(f, text, lowered) >= 0 for f in self.forms(value))

    def contradictions(self, text: str, truth: Mapping[str, str], vocabulary: Mapping[str, Iterable[str]],
                       keys: Optional[Sequence[str]] = None) -> list[tuple[str, str]]:
        """(key, stated value) pairs that contradict ``truth``."""
        out = []
        for key in keys or list(truth):
            true = truth.get(key)
            if not true:
                continue
            true_forms = {value_key(f) for f in self.forms(true)}
            for other in vocabulary.get(key, ()):
                n = value_key(other)
                if not n or n in true_forms or any(n in t for t in true_forms) or self.same(true, other):
                    continue
                if self.states(other, text):
                    out.append((key, str(other)))
        return out
