"""Two more text-understanding tasks of the paper's Table 4 (prompts and answer parsing): the
instruction data (:mod:`ipl.data.instructions`) trains them, the domain benchmark
(:mod:`ipl.eval.domain`) scores them.

* **content tagging** -- listing text -> the listing-level facts it states (condition, box,
  accessories, ...) as tags, ``"; "``-separated, ``none`` when it states none;
* **condition** (the sentiment-like task) -- listing text -> one condition grade of a closed
  list (the marketplace's condition field: ``like new`` / ``good`` / ``fair``; Mercari's
  ``item_condition_id`` maps onto them, :data:`MERCARI_GRADES`).
"""
from __future__ import annotations

import re
from typing import Optional

NONE_TAG = {"en": "none", "zh": "无"}
_SEP = re.compile(r"[;；\n]+")

# Mercari's item_condition_id (1 New, 2 Like new, 3 Good, 4 Fair, 5 Poor) on the three grades
MERCARI_GRADES = {"1": "like new", "2": "like new", "3": "good", "4": "fair", "5": "fair"}


def tagging_prompt(keys: list[str], text: str, language: str = "en") -> str:
    if language == "zh":
        return (f"给这条闲置商品描述打标签：写出它说明的{('、'.join(keys))}，用“; ”分隔；"
                f"一个都没说明就回答“{NONE_TAG['zh']}”。\n描述：{text}")
    return (f"Tag this second-hand listing with what its text states about: {', '.join(keys)}. Write the tags "
            f"separated by '; ' (answer '{NONE_TAG['en']}' when it states none).\nListing: {text}")


def tagging_messages(keys: list[str], text: str, language: str = "en") -> list[dict]:
    return [{"role": "user", "content": tagging_prompt(keys, text, language)}]


def tagging_target(tags: list[str], language: str = "en") -> str:
    return "; ".join(tags) if tags else NONE_TAG.get(language, NONE_TAG["en"])


def parse_tags(answer: str) -> set[str]:
    """The answer's tags, lower-cased and stripped; ``none`` is the empty set."""
    tags = {t.strip().strip(".。").lower() for t in _SEP.split(answer or "")}
    return {t for t in tags if t and t not in NONE_TAG.values()}


def condition_prompt(grades: list[str], text: str, language: str = "en") -> str:
    if language == "zh":
        return f"根据描述判断这件闲置商品的成色，只回答其中一个：{'、'.join(grades)}。\n描述：{text}"
    return (f"From the listing text, what condition is this second-hand item in? Answer with exactly one of: "
            f"{', '.join(grades)}.\nListing: {text}")


def condition_messages(grades: list[str], text: str, language: str = "en") -> list[dict]:
    return [{"role": "user", "content": condition_prompt(grades, text, language)}]


def parse_grade(answer: str, grades: list[str]) -> Optional[str]:
    """The first grade the answer names (longest first, so ``like new`` is not read as ``new``)."""
    a = (answer or "").lower()
    hits = [(a.find(g.lower()), -len(g), g) for g in grades if g.lower() in a]
    return min(hits)[2] if hits else None
