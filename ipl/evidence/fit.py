"""Calibrating the evidence model on the index's held-out queries (run by ``ipl index``).

Each held-out listing (its SKU has other listings in the index, it is not in the index) is
searched twice, as serving would see it: once as it is (its SKU's other listings can be
found) and once with its whole SKU removed from the hits (a product sold for the first time,
where only similar listings exist). From those queries:

* ``identical``: is the top hit the same SKU, as a function of its similarity (a hit-level
  tier; its threshold marks hits ``identical``);
* ``category``: is the predicted category right, as a function of its score;
* ``<basis>:<level>`` for ``identical:product``, ``identical:sku``, ``similar:product``,
  ``similar:sku``: is a candidate value right (equal to the query listing's own extracted
  value of that key), as a function of its raw agreement score
  (:func:`ipl.evidence.assess.scored_values`). ``similar:sku`` is fitted only to report the
  confidence of candidates offered to the seller; it never states a value;
* ``photo:sku``: is a photo classifier's value right (e.g. the colour head,
  :mod:`ipl.index.colour`), as a function of its probability (queries carry ``photo``);
* ``in_domain.min_similarity``: a low quantile of the queries' best similarity; photos below
  it are unlike anything in the index and get no product-level value.

Each value tier is also fitted per key (``<basis>:<level>:<key>``, e.g. ``similar:product:brand``)
when the held-out queries give that key at least ``key_min_candidates`` candidates: keys of one
level are not equally easy (a brand agrees across a maker's look-alike models, a model does not),
and a pooled tier states the harder key at the easier key's precision. Serving reads a key's own
tier when there is one (enabled or not: a key measured and found short of the target states
nothing) and its level's tier otherwise (:func:`ipl.evidence.assess.tier_for`).

The result is the manifest's ``evidence`` section; ``disabled`` lists every tier that could
not reach the target precision, with its reason inside the tier.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ipl.catalog.levels import KeyLevels
from ipl.evidence.assess import DEFAULT_ALPHA, DEFAULT_TAU, basis_hits, key_tier_name, scored_values, tier_name
from ipl.evidence.calibrate import fit_tier
from ipl.extract.matcher import value_key

VALUE_TIERS = (("identical", "product"), ("identical", "sku"), ("similar", "product"), ("similar", "sku"),
               ("photo", "sku"))
DEFAULT_KEY_MIN_CANDIDATES = 100


def mark_identical(hits: Sequence[dict], tier: Mapping) -> list[dict]:
    threshold = tier.get("threshold") if tier.get("enabled") else None
    return [{**h, "identical": threshold is not None and float(h["score"]) >= threshold} for h in hits]


def calibrate(queries: Sequence[Mapping], levels: KeyLevels, target: float, min_support: int, k: int,
              tau: float = DEFAULT_TAU, alpha: float = DEFAULT_ALPHA, ood_quantile: float = 0.01,
              key_min_candidates: int = DEFAULT_KEY_MIN_CANDIDATES) -> dict:
    """``queries``: each ``{"hits": [...], "truth": {key: value}, "sku_id", "category",
    "predicted": (category, score)}`` with hits (best first) carrying ``listing_id, sku_id,
    category, score, values``; both conditions of a listing are separate queries.
    ``key_min_candidates``: held-out candidates a key needs for a tier of its own (0: none)."""
    top_sim = [float(q["hits"][0]["score"]) for q in queries if q["hits"]]
    top_sku = [q["hits"][0].get("sku_id") == q["sku_id"] for q in queries if q["hits"]]
    identical = fit_tier(top_sim, top_sku, target, min_support, "top-1 hits")
    category = fit_tier([q["predicted"][1] for q in queries], [q["predicted"][0] == q["category"] for q in queries],
                        target, min_support, "category predictions")
    samples: dict[str, tuple[list, list]] = {tier_name(b, lv): ([], []) for b, lv in VALUE_TIERS}
    by_key: dict[str, dict[str, tuple[list, list]]] = {}  # level tier -> <basis>:<level>:<key> -> samples

    def add(basis: str, level: str, key: str, score: float, right: bool) -> None:
        for xs, ys in (samples[tier_name(basis, level)],
                       by_key.setdefault(tier_name(basis, level), {}).setdefault(key_tier_name(basis, level, key),
                                                                                 ([], []))):
            xs.append(score)
            ys.append(right)
    for q in queries:
        cat, score = q["predicted"]
        if not category.get("enabled") or score < category["threshold"]:
            continue  # serving would not use the category: no template, no values
        hits = mark_identical([h for h in q["hits"] if h.get("category") == cat][:k], identical)
        if not hits:
            continue
        top = float(hits[0]["score"])
        for key, true in (q.get("truth") or {}).items():
            level = levels.level(key)
            if level == "listing" or not str(true).strip():
                continue
            for basis in ("identical", "similar"):
                for c in scored_values(basis_hits(hits, basis), key, tau, alpha, top):
                    add(basis, level, key, c["raw"], value_key(c["value"]) == value_key(true))
            for p in (q.get("photo") or {}).get(key, ()) if level == "sku" else ():
                add("photo", level, key, p["score"], value_key(p["value"]) == value_key(true))
    tiers = {"identical": identical, "category": category}
    for name, (xs, ys) in samples.items():
        if name == "photo:sku" and not xs:
            continue  # no photo classifier
        tiers[name] = fit_tier(xs, ys, target, min_support, f"{name} candidates")
        for key_name, (kx, ky) in sorted(by_key.get(name, {}).items()):  # each key's right after its level's
            if key_min_candidates and len(kx) >= key_min_candidates:
                tiers[key_name] = {**fit_tier(kx, ky, target, min_support, f"{key_name} candidates"), "key_tier": name}
    never = "never stated: another SKU's value is not this item's (offered to the seller as a candidate)"
    for name in [n for n in tiers if n == "similar:sku" or n.startswith("similar:sku:")]:
        tiers[name] = {**tiers[name], "enabled": False, "policy": never}
    floor = float(np.quantile(top_sim, ood_quantile)) if top_sim else None
    return {"target_precision": target, "min_support": min_support, "k": k, "tau": tau, "alpha": alpha,
            "key_min_candidates": key_min_candidates, "queries": len(queries), "tiers": tiers,
            "in_domain": {"min_similarity": None if floor is None else round(floor, 6), "quantile": ood_quantile},
            "disabled": sorted(n for n, t in tiers.items() if not t.get("enabled") and "policy" not in t)}


def describe(evidence: Mapping) -> list[str]:
    """Lines for ``ipl index`` output: each tier's threshold and precision, or why it is off."""
    lines = [f"  evidence calibration on {evidence.get('queries', 0)} held-out queries (target precision "
             f"{evidence.get('target_precision')}):"]
    for name, t in (evidence.get("tiers") or {}).items():
        if t.get("key_tier") and "policy" in t:
            continue  # its level's line already says the policy
        name = f"  {name}" if t.get("key_tier") else name  # a key's own tier, under its level's
        if t.get("enabled"):
            lines.append(f"    {name:<17} threshold {t['threshold']:.3f}: precision {t['precision']:.2f} on "
                         f"{t['coverage']:.0%} of {t['n']}")
        elif "policy" in t:
            lines.append(f"    {name:<17} off by policy ({t['policy']})")
        else:
            lines.append(f"    {name:<17} DISABLED: {t.get('reason')}")
    dom = evidence.get("in_domain") or {}
    if dom.get("min_similarity") is not None:
        lines.append(f"    in-domain floor   best similarity >= {dom['min_similarity']:.3f} "
                     f"({dom['quantile']:.0%} quantile of held-out queries)")
    return lines
