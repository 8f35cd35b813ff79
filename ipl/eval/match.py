"""Attribute accuracy and hallucination: what a description states about the key attributes.

``AttributeMatcher(synonyms).states(value, text)`` (:mod:`ipl.extract.matcher`, shared with
serving's verification): the value, or a synonym of it, is in the
text. Matching is the grounding matcher's (:mod:`ipl.extract.grounding`): NFKC, case-folded,
spaces/hyphens inside values and units tolerated (``64GB`` ~ ``64 gb``), token boundaries
for Latin values (``Red`` is not in ``bred``).

* accuracy (recall): the share of the ground-truth key values the description states;
* precision: of the values of those keys the description states, the share that is true;
* hallucination: a description *contradicts* the truth when it states another known value
  of a key (the key's values in the category, then in every other category:
  :func:`ipl.extract.matcher.across_categories`, so "Adidas" in a laptop's draft counts) that
  is not a synonym of the true value nor a part of it (``iPhone 13`` inside ``iPhone 13 Pro``
  is not a contradiction). The hallucination rate is the share of descriptions with at least one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.matcher import AttributeMatcher

__all__ = ["AttributeMatcher", "AttributeScore", "vocabulary_of"]


@dataclass
class AttributeScore:
    """Counts over a set of descriptions: recall (``acc``) beside precision, per-value errors
    (``contradicted_values``) beside per-description ones (``hallucination``), and the share of
    true values the draft left to the seller (``abstained``)."""

    values: int = 0
    stated: int = 0
    contradicted: int = 0
    abstained: int = 0
    descriptions: int = 0
    hallucinated: int = 0
    per_key: dict[str, list[int]] = field(default_factory=dict)

    def add(self, matcher: AttributeMatcher, text: str, truth: Mapping[str, str], keys: Sequence[str],
            vocabulary: Mapping[str, Iterable[str]], abstained: Iterable[str] = ()) -> dict:
        keys = [k for k in keys if truth.get(k)]
        hits = {k: matcher.states(str(truth[k]), text) for k in keys}
        wrong = matcher.contradictions(text, truth, vocabulary, keys)
        left = [k for k in keys if k in set(abstained)]
        self.values += len(keys)
        self.stated += sum(hits.values())
        self.contradicted += len(wrong)
        self.abstained += len(left)
        self.descriptions += 1
        self.hallucinated += bool(wrong)
        for k, ok in hits.items():
            slot = self.per_key.setdefault(k, [0, 0])
            slot[0] += ok
            slot[1] += 1
        return {"stated": [k for k, ok in hits.items() if ok], "missed": [k for k, ok in hits.items() if not ok],
                "contradicted": [f"{k}={v}" for k, v in wrong], "abstained": left}

    @property
    def accuracy(self) -> float:
        return self.stated / self.values if self.values else 0.0

    @property
    def precision(self) -> Optional[float]:
        """Correct stated values / all stated values of the scored keys (None when nothing is stated)."""
        said = self.stated + self.contradicted
        return self.stated / said if said else None

    @property
    def hallucination_rate(self) -> float:
        return self.hallucinated / self.descriptions if self.descriptions else 0.0

    def summary(self) -> dict:
        return {"acc": self.accuracy, "precision": self.precision, "hallucination": self.hallucination_rate,
                "contradicted_values": self.contradicted,
                "abstained": self.abstained / self.values if self.values else 0.0,
                "values": self.values, "stated": self.stated, "descriptions": self.descriptions,
                "per_key": {k: round(a / b, 4) for k, (a, b) in sorted(self.per_key.items())}}


def vocabulary_of(truths: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, dict[str, set[str]]]:
    """category -> key -> the values seen for it (the known alternatives a description could state)."""
    vocab: dict[str, dict[str, set[str]]] = {}
    for category, attrs in truths:
        for k, v in (attrs or {}).items():
            if v:
                vocab.setdefault(category, {}).setdefault(k, set()).add(str(v))
    return vocab
