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

Two failures those counts miss: ``listing_facts`` (what a description says about the item's own
condition, which only the seller can give) and ``partial_values`` (a product named by a part of a
known value, "Used iPhone 12" for a watch; the words from ``leading_words``). And
``other_category``: a draft calling the item by another category's name ("My own watch" for a
phone), where that category's sellers rarely write it (``category_words``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.matcher import (AttributeMatcher, category_words, leading_words, near_values, other_category,
                                 states_word)

__all__ = ["AttributeMatcher", "AttributeScore", "category_words", "leading_words", "listing_facts", "other_category",
           "partial_values", "vocabulary_of"]


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


def partial_values(text: str, truth: Mapping[str, str], leads: Mapping[str, Iterable[str]], matcher: AttributeMatcher
                   ) -> list[str]:
    """The distinctive leading words (:func:`leading_words`) a description writes as written (a whole
    word, case and all: "Watch" of "Watch SE", not the common noun "watch") without the whole value
    it starts and that no true value of the item contains: a product named by a part."""
    true = " ".join(str(v) for v in (truth or {}).values())
    return [word for word, values in leads.items()
            if not matcher.states(word, true) and not any(matcher.states(v, text) for v in values)
            and states_word(word, text)]


def near_misses(text: str, truth: Mapping[str, str], vocabulary: Mapping[str, Iterable[str]],
                matcher: AttributeMatcher) -> list[str]:
    """The code-like words of a description one edit from a known model number or measure of the
    item's keys that neither a known value nor the item's truth holds ("WH-1000XM3" for a
    WH-1000XM4: :func:`ipl.extract.matcher.near_values`): another product, which the wrong values
    (whole known values) miss."""
    truth = {k: str(v) for k, v in (truth or {}).items() if v}
    return list(near_values(text, truth, [], vocabulary, matcher))


def listing_facts(matcher: AttributeMatcher, text: str, rec: dict, facts: dict, levels, vocabulary: dict
                  ) -> dict[str, int]:
    """What a description says about the listing's own condition (the listing-level keys: Condition,
    Battery, Shutter count, ...), which no photo or retrieved listing can support: of the
    listing's true values, how many it states (``stated``), how many other known values of those
    keys it states (``contradicted``), how many stated values, true or not, the row was not given
    as facts (``unsupported``: made up, however lucky), and ``drafts`` 1 when there is any."""
    truth = {k: v for k, v in (rec.get("attributes") or {}).items() if v and levels.level(k) == "listing"}
    stated = [k for k, v in truth.items() if matcher.states(str(v), text)]
    wrong = matcher.contradictions(text, truth, vocabulary, list(truth))
    unsupported = sum(1 for k in stated if k not in facts) + sum(1 for k, _ in wrong if k not in facts)
    return {"values": len(truth), "stated": len(stated), "contradicted": len(wrong), "unsupported": unsupported,
            "drafts": int(unsupported > 0)}
