"""Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009) of image and caption retrieval.

Each ranking is a list of listing ids, best first. A listing's fused score is the sum over the
rankings that contain it of ``weight / (k + rank)`` (rank from 1): ranks, not raw scores, so an
image cosine and a text cosine need no common scale, and an item near the top of either list
rises. ``k`` (60 in the paper) damps the head of each list; a larger ``k`` flattens the
difference between ranks. Ties break by the best single rank, then by first appearance, so the
order is deterministic.
"""
from __future__ import annotations

from typing import Hashable, Optional, Sequence


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60.0,
                           weights: Optional[Sequence[float]] = None) -> list[tuple[Hashable, float]]:
    """(id, fused score) best first. An id repeated inside one ranking counts at its best rank."""
    if k <= 0:
        raise ValueError(f"reciprocal rank fusion: k must be > 0, got {k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"reciprocal rank fusion: {len(weights)} weights for {len(rankings)} rankings")
    if any(w < 0 for w in weights):
        raise ValueError(f"reciprocal rank fusion: negative weight in {weights}")
    score: dict[Hashable, float] = {}
    best: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    order = 0
    for ranking, w in zip(rankings, weights):
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            score[item] = score.get(item, 0.0) + w / (k + rank)
            best[item] = min(best.get(item, rank), rank)
            if item not in first:
                first[item], order = order, order + 1
    return sorted(score.items(), key=lambda kv: (-kv[1], best[kv[0]], first[kv[0]]))
