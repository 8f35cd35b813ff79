"""Attribute accuracy and hallucination: what a description states about the key attributes.

``AttributeMatcher(synonyms).states(value, text)``: the value, or a synonym of it, is in the
text. Matching is the grounding matcher's (:mod:`ipl.extract.grounding`): NFKC, case-folded,
spaces/hyphens inside values and units tolerated (``64GB`` ~ ``64 gb``), token boundaries
for Latin values (``Red`` is not in ``bred``).

* accuracy: the share of the ground-truth key values the description states;
* hallucination: a description *contradicts* the truth when it states another known value
  of a key (from the vocabulary of that key's values in the category) that is not a
  synonym of the true value nor a part of it (``iPhone 13`` inside ``iPhone 13 Pro`` is not
  a contradiction). The hallucination rate is the share of descriptions with at least one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.grounding import find_value
from ipl.text.normalize import normalize


def _norm(value: str) -> str:
    return "".join(c for c in normalize(str(value)).lower() if not c.isspace() and c not in "-_.")


class AttributeMatcher:
    def __init__(self, synonyms: Iterable[Sequence[str]] = ()):
        self._groups: dict[str, set[str]] = {}
        for group in synonyms:
            forms = {str(v) for v in group if str(v).strip()}
            merged = set(forms)
            for f in forms:
                merged |= self._groups.get(_norm(f), set())
            for f in merged:
                self._groups[_norm(f)] = merged

    def forms(self, value: str) -> set[str]:
        """The value and its synonyms."""
        return {str(value)} | self._groups.get(_norm(value), set())

    def same(self, a: str, b: str) -> bool:
        return _norm(a) == _norm(b) or _norm(b) in {_norm(f) for f in self.forms(a)}

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
            true_forms = {_norm(f) for f in self.forms(true)}
            for other in vocabulary.get(key, ()):
                n = _norm(other)
                if not n or n in true_forms or any(n in t for t in true_forms) or self.same(true, other):
                    continue
                if self.states(other, text):
                    out.append((key, str(other)))
        return out


@dataclass
class AttributeScore:
    """Counts over a set of descriptions."""

    values: int = 0
    stated: int = 0
    descriptions: int = 0
    hallucinated: int = 0
    per_key: dict[str, list[int]] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def add(self, matcher: AttributeMatcher, text: str, truth: Mapping[str, str], keys: Sequence[str],
            vocabulary: Mapping[str, Iterable[str]]) -> dict:
        keys = [k for k in keys if truth.get(k)]
        hits = {k: matcher.states(str(truth[k]), text) for k in keys}
        wrong = matcher.contradictions(text, truth, vocabulary, keys)
        self.values += len(keys)
        self.stated += sum(hits.values())
        self.descriptions += 1
        self.hallucinated += bool(wrong)
        for k, ok in hits.items():
            slot = self.per_key.setdefault(k, [0, 0])
            slot[0] += ok
            slot[1] += 1
        return {"stated": [k for k, ok in hits.items() if ok], "missed": [k for k, ok in hits.items() if not ok],
                "contradicted": [f"{k}={v}" for k, v in wrong]}

    @property
    def accuracy(self) -> float:
        return self.stated / self.values if self.values else 0.0

    @property
    def hallucination_rate(self) -> float:
        return self.hallucinated / self.descriptions if self.descriptions else 0.0

    def summary(self) -> dict:
        return {"acc": self.accuracy, "hallucination": self.hallucination_rate, "values": self.values,
                "stated": self.stated, "descriptions": self.descriptions,
                "per_key": {k: round(a / b, 4) for k, (a, b) in sorted(self.per_key.items())}}


def vocabulary_of(truths: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, dict[str, set[str]]]:
    """category -> key -> the values seen for it (the known alternatives a description could state)."""
    vocab: dict[str, dict[str, set[str]]] = {}
    for category, attrs in truths:
        for k, v in (attrs or {}).items():
            if v:
                vocab.setdefault(category, {}).setdefault(k, set()).add(str(v))
    return vocab
