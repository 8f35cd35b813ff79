"""How good the captions are, and how good CQE is at keeping the good ones.

``caption_quality(cases, keys)``: each case is a caption with the item's true values, the
category's known values (what a caption could state) and the CQE verdict. For the captions
kept by CQE and for all of them: how many values they state, the precision (stated values
that are true) and the recall (true values of ``keys`` they state). CQE is scored as a
classifier against an oracle: a caption is *good* when it states no wrong value and at least
one right one; ``agreement`` is the share of captions where the verdict equals the oracle,
``precision`` the share of kept captions that are good, ``recall`` the share of good captions
kept. What these metrics hide is reported beside them: the kept share, and the counts.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ipl.caption.cqe import caption_values
from ipl.extract.matcher import AttributeMatcher


def judge_caption(caption: str, truth: Mapping[str, str], vocabulary: Mapping[str, Sequence[str]],
                  keys: Sequence[str], matcher: AttributeMatcher) -> dict:
    """(stated, correct, wrong, true values) of one caption over ``keys``."""
    stated = caption_values(caption, {k: vocabulary.get(k, ()) for k in keys}, matcher)
    correct = [k for k, v in stated.items() if truth.get(k) and matcher.same(v, truth[k])]
    wrong = [k for k in stated if k not in correct]
    return {"stated": len(stated), "correct": len(correct), "wrong": len(wrong),
            "true": sum(1 for k in keys if truth.get(k)), "good": bool(correct) and not wrong}


def _totals(rows: list[dict]) -> dict:
    stated = sum(r["stated"] for r in rows)
    correct = sum(r["correct"] for r in rows)
    true = sum(r["true"] for r in rows)
    return {"captions": len(rows), "values_stated": stated, "correct": correct,
            "wrong": sum(r["wrong"] for r in rows),
            "precision": round(correct / stated, 4) if stated else None,
            "recall": round(correct / true, 4) if true else None,
            "good": sum(r["good"] for r in rows)}


def caption_quality(cases: Sequence[Mapping], keys: Sequence[str],
                    matcher: Optional[AttributeMatcher] = None) -> dict:
    """``cases``: dicts with ``caption``, ``truth``, ``vocabulary`` and ``keep`` (the CQE verdict)."""
    matcher = matcher or AttributeMatcher()
    rows = []
    for c in cases:
        r = judge_caption(c["caption"], c.get("truth") or {}, c.get("vocabulary") or {}, keys, matcher)
        rows.append({**r, "keep": bool(c.get("keep"))})
    kept = [r for r in rows if r["keep"]]
    good = [r for r in rows if r["good"]]
    agree = sum(r["keep"] == r["good"] for r in rows)
    return {
        "keys": list(keys),
        "all": _totals(rows),
        "kept": _totals(kept),
        "cqe": {"captions": len(rows), "kept": len(kept), "kept_share": round(len(kept) / len(rows), 4) if rows else None,
                "oracle_good": len(good),
                "agreement": round(agree / len(rows), 4) if rows else None,
                "precision": round(sum(r["good"] for r in kept) / len(kept), 4) if kept else None,
                "recall": round(sum(r["keep"] for r in good) / len(good), 4) if good else None},
    }
