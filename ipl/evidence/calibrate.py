"""Calibration of one evidence tier: from a raw score to a confidence, and a threshold or "off".

``fit_tier(scores, correct, target, min_support)`` fits, on held-out queries, the chance that
a candidate with this raw score is right: an isotonic (pool-adjacent-violators) regression
of correctness on the score, so the confidence never falls as the score rises. The tier's
threshold is the lowest score whose confidence reaches ``target`` with at least
``min_support`` held-out candidates at or above it; every candidate stated by the tier then
had at least the target precision on the held-out queries. A tier where no score gets
there is returned ``enabled: false`` with the reason; callers state nothing through it and
say so (``ipl index``, the manifest, ``/healthz``). There is no silent fallback threshold.

``confidence(tier, score)`` reads the fitted curve (a step function; below the first knot
the lowest fitted value). The fitted curve is JSON (``[[score, confidence], ...]``) stored in
the index manifest, so serving and evaluation read exactly what the index calibrated.
"""
from __future__ import annotations

import bisect
from typing import Optional, Sequence

import numpy as np


def isotonic(scores: np.ndarray, correct: np.ndarray) -> list[tuple[float, float, int]]:
    """PAV blocks over ascending scores: (lowest score of the block, fitted precision, count)."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], correct[order].astype(float)
    blocks: list[list[float]] = []  # [start score, sum, count]
    i = 0
    while i < len(s):  # ties form one block
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        blocks.append([float(s[i]), float(y[i:j + 1].sum()), j - i + 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            start, total, n = blocks[-2]
            blocks[-2:] = [[start, total + blocks[-1][1], n + blocks[-1][2]]]
        i = j + 1
    return [(b[0], b[1] / b[2], int(b[2])) for b in blocks]


def fit_tier(scores: Sequence[float], correct: Sequence[bool], target: float, min_support: int,
             what: str = "candidates") -> dict:
    scores = np.asarray(scores, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    n = int(len(scores))
    out: dict = {"enabled": False, "threshold": None, "precision": None, "coverage": 0.0, "n": n,
                 "positives": int(correct.sum()), "target": target, "curve": []}
    if n == 0:
        out["reason"] = f"no held-out {what} to calibrate on"
        return out
    blocks = isotonic(scores, correct)
    out["curve"] = [[round(b[0], 6), round(b[1], 4)] for b in blocks]
    counts = np.array([b[2] for b in blocks])
    above = np.cumsum(counts[::-1])[::-1]  # held-out candidates at or above each block's start
    for (start, p, _), support in zip(blocks, above):
        if p >= target and support >= min_support:
            mask = scores >= start
            out.update(enabled=True, threshold=round(start, 6), precision=round(float(correct[mask].mean()), 4),
                       coverage=round(float(mask.mean()), 4))
            return out
    best = max(blocks, key=lambda b: b[1])
    out["reason"] = (f"no score reaches precision {target:g} with {min_support}+ of {n} held-out {what} "
                     f"(best {best[1]:.2f} on {best[2]})")
    return out


def confidence(tier: Optional[dict], score: float) -> float:
    """The calibrated confidence of a raw score (0 for a tier never fitted)."""
    curve = (tier or {}).get("curve") or []
    if not curve:
        return 0.0
    starts = [c[0] for c in curve]
    i = bisect.bisect_right(starts, score) - 1
    return float(curve[max(i, 0)][1])


def passes(tier: Optional[dict], score: float) -> bool:
    """Whether a raw score is stated by this tier (enabled and at or above its threshold)."""
    return bool(tier and tier.get("enabled") and tier.get("threshold") is not None and score >= tier["threshold"])
