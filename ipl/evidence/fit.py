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
* ``photo:product``: the same for a product-level classifier (the product heads,
  :mod:`ipl.index.product`: brand and model per category, their predictions cross-fitted by SKU),
  counting a value only where the nearest hit gives it too, as serving does
  (:func:`ipl.evidence.assess.photo_candidates`);
* ``in_domain.min_similarity``: a low quantile of the queries' best similarity; photos below
  it are unlike anything in the index and get no product-level value.

Each value tier is also fitted per key (``<basis>:<level>:<key>``, e.g. ``similar:product:brand``)
when the held-out queries give that key at least ``key_min_candidates`` candidates: keys of one
level are not equally easy (a brand agrees across a maker's look-alike models, a model does not),
and a pooled tier states the harder key at the easier key's precision. Serving reads a key's own
tier when there is one (enabled or not: a key measured and found short of the target states
nothing) and its level's tier otherwise (:func:`ipl.evidence.assess.tier_for`).

**Score search** (``score_search``): the agreement score's weights ``exp((s_h - anchor) / tau)``
and pseudo-count ``alpha`` decide what a tier can tell apart. With the anchor at the draft's own
best similarity (the fixed default) a value agreed on by distant listings scores as high as one
agreed on by near-copies, which is fine for a brand (a maker's look-alike models share it) and
poor for a model (measured on the demo's held-out queries: 5 % of the model values stated at
precision 0.95). So each retrieval value tier picks its own ``(tau, alpha, anchor)`` from a small
grid -- anchors are the draft's best similarity or quantiles of the held-out queries' best
similarity, so the grid follows any encoder's scale -- by **cross-fitted** recall: the queries
are split in two by SKU, a threshold fitted on one half is applied to the other, and the
setting stating the most right values there at a precision still at or above the target wins
(the default when none does better). The tier's threshold is then fitted on all queries with
it. The tier carries the setting (``score``) and what the search measured (``search``:
cross-fitted recall and precision of the chosen and of the default setting); serving scores
the tier's candidates with it (:func:`ipl.evidence.assess.key_candidates`).

The result is the manifest's ``evidence`` section; ``disabled`` lists every tier that could
not reach the target precision, with its reason inside the tier.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ipl.catalog.levels import KeyLevels
from ipl.evidence.assess import (DEFAULT_ALPHA, DEFAULT_TAU, basis_hits, key_tier_name, photo_candidates,
                                 scored_values, tier_name)
from ipl.evidence.calibrate import fit_tier
from ipl.extract.matcher import value_key

VALUE_TIERS = (("identical", "product"), ("identical", "sku"), ("similar", "product"), ("similar", "sku"),
               ("photo", "product"), ("photo", "sku"))
DEFAULT_KEY_MIN_CANDIDATES = 100
SEARCHED = {("identical", "product"), ("identical", "sku"), ("similar", "product")}  # the stated retrieval tiers
SEARCH_TAUS = (0.005, 0.01, 0.02, 0.05, 0.1)
SEARCH_ALPHAS = (0.25, 1.0, 3.0)
SEARCH_ANCHOR_QUANTILES = (0.25, 0.5, 0.75, 0.9)  # of the held-out queries' best similarity; plus the draft's own
SEARCH_MAX_QUERIES = 5000  # the search reads the queries of every n-th SKU past this; thresholds read all


def mark_identical(hits: Sequence[dict], tier: Mapping) -> list[dict]:
    threshold = tier.get("threshold") if tier.get("enabled") else None
    return [{**h, "identical": threshold is not None and float(h["score"]) >= threshold} for h in hits]


def calibrate(queries: Sequence[Mapping], levels: KeyLevels, target: float, min_support: int, k: int,
              tau: float = DEFAULT_TAU, alpha: float = DEFAULT_ALPHA, ood_quantile: float = 0.01,
              key_min_candidates: int = DEFAULT_KEY_MIN_CANDIDATES, score_search: bool = False,
              level_targets: Optional[Mapping[str, float]] = None) -> dict:
    """``queries``: each ``{"hits": [...], "truth": {key: value}, "sku_id", "category",
    "predicted": (category, score)}`` with hits (best first) carrying ``listing_id, sku_id,
    category, score, values``; both conditions of a listing are separate queries.
    ``key_min_candidates``: held-out candidates a key needs for a tier of its own (0: none).
    ``score_search``: each retrieval value tier chooses its agreement score (module docstring).
    ``level_targets``: a key level's own target precision for its value tiers (e.g. ``{"product":
    0.98}``: a wrong brand or model costs more than a colour to confirm); ``target`` otherwise."""
    level_targets = {lv: t for lv, t in (level_targets or {}).items() if t is not None}
    top_sim = [float(q["hits"][0]["score"]) for q in queries if q["hits"]]
    top_sku = [q["hits"][0].get("sku_id") == q["sku_id"] for q in queries if q["hits"]]
    identical = fit_tier(top_sim, top_sku, target, min_support, "top-1 hits")
    category = fit_tier([q["predicted"][1] for q in queries], [q["predicted"][0] == q["category"] for q in queries],
                        target, min_support, "category predictions")
    used = []  # (sku, hits, [(key, level, true)], photo) of the queries serving would state values for
    for q in queries:
        cat, score = q["predicted"]
        if not category.get("enabled") or score < category["threshold"]:
            continue  # serving would not use the category: no template, no values
        hits = mark_identical([h for h in q["hits"] if h.get("category") == cat][:k], identical)
        if not hits:
            continue
        truth = [(key, levels.level(key), true) for key, true in (q.get("truth") or {}).items()
                 if levels.level(key) != "listing" and str(true).strip()]
        used.append((q["sku_id"], hits, truth, q.get("photo") or {}))
    default = {"tau": tau, "alpha": alpha, "anchor": None}
    samples = _samples(used, default)
    tiers = {"identical": identical, "category": category}
    fitted_keys = {name: kx for name, (kx, _, _) in samples.items() if name.count(":") == 2}
    for basis, level in VALUE_TIERS:
        name = tier_name(basis, level)
        goal = level_targets.get(level, target)
        if name not in samples:
            if basis != "photo":
                tiers[name] = fit_tier([], [], goal, min_support, f"{name} candidates")
            continue  # no photo classifier
        names = [name, *sorted(n for n in fitted_keys if n.startswith(name + ":")
                               and key_min_candidates and len(fitted_keys[n]) >= key_min_candidates)]
        for tier in names:
            setting, search = default, None
            if score_search and (basis, level) in SEARCHED and samples[tier][0]:
                setting, search = _search(used, tier, default, top_sim, goal, min_support)
            xs, ys, _ = samples[tier] if setting is default else _samples(used, setting, only=tier)[tier]
            fitted = fit_tier(xs, ys, goal, min_support, f"{tier} candidates")
            if basis != "photo":
                fitted["score"] = setting
            if search is not None:
                fitted["search"] = search
            tiers[tier] = {**fitted, "key_tier": name} if tier != name else fitted
    never = "never stated: another SKU's value is not this item's (offered to the seller as a candidate)"
    for name in [n for n in tiers if n == "similar:sku" or n.startswith("similar:sku:")]:
        tiers[name] = {**tiers[name], "enabled": False, "policy": never}
    floor = float(np.quantile(top_sim, ood_quantile)) if top_sim else None
    return {"target_precision": target, "level_targets": level_targets, "min_support": min_support, "k": k, "tau": tau, "alpha": alpha,
            "key_min_candidates": key_min_candidates, "score_search": score_search, "queries": len(queries),
            "tiers": tiers,
            "in_domain": {"min_similarity": None if floor is None else round(floor, 6), "quantile": ood_quantile},
            "disabled": sorted(n for n, t in tiers.items() if not t.get("enabled") and "policy" not in t)}


def _samples(used: Sequence[tuple], setting: Mapping, only: Optional[str] = None
             ) -> dict[str, tuple[list, list, list]]:
    """Tier name (level and key tiers) -> (raw scores, right or not, SKU of the query) of every
    candidate value, scored with ``setting`` (``tau``, ``alpha``, ``anchor``: None is the draft's
    best similarity). ``only``: just that tier."""
    out: dict[str, tuple[list, list, list]] = {}
    want = only.split(":", 2) if only else None  # basis, level[, key] (a key may hold a colon)
    bases = [b for b in ("identical", "similar") if not want or b == want[0]]

    def add(name: str, score: float, right: bool, sku) -> None:
        if only is None or name == only:
            xs, ys, gs = out.setdefault(name, ([], [], []))
            xs.append(score)
            ys.append(right)
            gs.append(sku)
    for sku, hits, truth, photo in used:
        top = float(hits[0]["score"]) if setting.get("anchor") is None else float(setting["anchor"])
        for key, level, true in truth:
            if want and (level != want[1] or (len(want) > 2 and str(key).strip().lower() != want[2])):
                continue
            for basis in bases:
                for c in scored_values(basis_hits(hits, basis), key, setting["tau"], setting["alpha"], top):
                    right = value_key(c["value"]) == value_key(true)
                    add(tier_name(basis, level), c["raw"], right, sku)
                    add(key_tier_name(basis, level, key), c["raw"], right, sku)
            for p in photo_candidates(photo.get(key), hits, key, level) if not want or want[0] == "photo" else ():
                right = value_key(p["value"]) == value_key(true)
                add(tier_name("photo", level), p["score"], right, sku)
                add(key_tier_name("photo", level, key), p["score"], right, sku)
    return out


def _crossfit(xs: Sequence[float], ys: Sequence[bool], skus: Sequence, target: float, min_support: int
              ) -> tuple[int, int]:
    """(right values stated, values stated) when each half of the SKUs is judged by the threshold
    fitted on the other half."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=bool)
    order = {s: i % 2 for i, s in enumerate(sorted({str(s) for s in skus}))}
    half = np.array([order[str(s)] for s in skus])
    right = said = 0
    for fold in (0, 1):
        fit, judge = half != fold, half == fold
        tier = fit_tier(xs[fit], ys[fit], target, max(1, min_support // 2))
        if tier["enabled"]:
            mask = judge & (xs >= tier["threshold"])
            right, said = right + int(ys[mask].sum()), said + int(mask.sum())
    return right, said


def _search(used: Sequence[tuple], tier: str, default: Mapping, top_sim: Sequence[float], target: float,
            min_support: int) -> tuple[dict, dict]:
    """The setting of ``tier``'s agreement score with the most cross-fitted right values at a
    cross-fitted precision at or above ``target`` (the default unless another states more), and
    what was measured."""
    anchors = [None, *sorted({round(float(np.quantile(top_sim, q)), 4) for q in SEARCH_ANCHOR_QUANTILES})]
    grid = [default] + [{"tau": t, "alpha": a, "anchor": an} for t in SEARCH_TAUS for a in SEARCH_ALPHAS
                        for an in anchors if (t, a, an) != (default["tau"], default["alpha"], default["anchor"])]
    if len(used) > SEARCH_MAX_QUERIES:  # whole SKUs, so both conditions of a listing stay together
        skus = sorted({str(u[0]) for u in used})
        step = -(-len(used) // SEARCH_MAX_QUERIES)
        keep = set(skus[::step])
        used = [u for u in used if str(u[0]) in keep]
    best, best_fit, first = default, None, None
    for setting in grid:
        xs, ys, gs = _samples(used, setting, only=tier).get(tier, ([], [], []))
        right, said = _crossfit(xs, ys, gs, target, min_support)
        if first is None:
            first = (right, said, int(np.sum(ys)))
        if said and right / said >= target and right > (best_fit[0] if best_fit else 0):
            best, best_fit = setting, (right, said)
    chosen = best_fit or (first[0], first[1])
    positives = max(1, first[2])

    def rate(r, n):
        return {"recall": round(r / positives, 4), "precision": round(r / n, 4) if n else None}
    return dict(best), {"settings": len(grid), "chosen": rate(*chosen), "default": rate(first[0], first[1])}


def _searched(tier: Mapping) -> str:
    """What the score search chose for a tier, when it chose other than the default."""
    search, score = tier.get("search") or {}, tier.get("score") or {}
    if not search or search["chosen"] == search["default"]:
        return ""
    anchor = "the best hit" if score.get("anchor") is None else f"{score['anchor']:.3f}"
    return (f" (score tau {score['tau']:g}, alpha {score['alpha']:g}, from {anchor}: cross-fitted recall "
            f"{search['chosen']['recall']:.2f} against {search['default']['recall']:.2f})")


def describe(evidence: Mapping) -> list[str]:
    """Lines for ``ipl index`` output: each tier's threshold and precision, or why it is off."""
    levels = "".join(f"; {lv} values {t}" for lv, t in (evidence.get("level_targets") or {}).items())
    lines = [f"  evidence calibration on {evidence.get('queries', 0)} held-out queries (target precision "
             f"{evidence.get('target_precision')}{levels}):"]
    for name, t in (evidence.get("tiers") or {}).items():
        if t.get("key_tier") and "policy" in t:
            continue  # its level's line already says the policy
        name = f"  {name}" if t.get("key_tier") else name  # a key's own tier, under its level's
        if t.get("enabled"):
            lines.append(f"    {name:<17} threshold {t['threshold']:.3f}: precision {t['precision']:.2f} on "
                         f"{t['coverage']:.0%} of {t['n']}" + _searched(t))
        elif "policy" in t:
            lines.append(f"    {name:<17} off by policy ({t['policy']})")
        else:
            lines.append(f"    {name:<17} DISABLED: {t.get('reason')}")
    dom = evidence.get("in_domain") or {}
    if dom.get("min_similarity") is not None:
        lines.append(f"    in-domain floor   best similarity >= {dom['min_similarity']:.3f} "
                     f"({dom['quantile']:.0%} quantile of held-out queries)")
    return lines
