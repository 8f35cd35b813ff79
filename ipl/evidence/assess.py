"""The evidence model: every attribute value with its basis, calibrated confidence and status.

Input: the retrieved listings of the draft's category (``hits``: ``listing_id, score,
identical`` and ``values``, the grounded attribute values that listing states), the
template's keys, their levels (:mod:`ipl.catalog.levels`), the index's calibration
(:mod:`ipl.evidence.calibrate`, in the manifest under ``evidence``), the values the seller
confirmed, and whether the photos are in the index's domain at all.

Raw score of a value ``v`` of a key from a set of hits ``H``: similarity-weighted agreement
with a pseudo-count, ``sum(w_h, h in H states v) / (sum(w_h, h in H states the key) + alpha)``
with ``w_h = exp((s_h - s_top) / tau)`` (``s_top``: the best similarity of the draft's hits, or
the tier's fixed ``anchor``: then listings far from the photo weigh little against ``alpha``
however well they agree; each tier's ``tau``, ``alpha`` and anchor come from the calibration's
score search, :mod:`ipl.evidence.fit`).
One listing alone scores at most ``1 / (1 + alpha)``; several agreeing listings close to the
top approach 1; listings far below the top count little. Bases and the levels they may state:

* ``identical`` (hits at or above the calibrated identical-product threshold): product + SKU;
* ``similar`` (all hits of the category): product level only; SKU-level candidates are
  offered to the seller, never stated (another SKU's colour is not this item's colour);
* ``photo`` (a classifier on the seller's photos: its probability is the raw score): SKU level
  (the colour head) and product level (the product heads: brand, model; a head's value counts
  only when the nearest retrieved listing stating the key gives it too, :func:`photo_candidates`:
  a closed-set classifier names a known product even for a product it never saw);
* ``caption`` (a value a CASLIE caption of the photos states, :mod:`ipl.caption`; the share of
  the CQE judges that kept the caption is the raw score): product + SKU level, each its own
  calibrated tier (``caption:product``, ``caption:sku``);
* ``seller``: confirmed values, confidence 1;
* a product-level value implies the broader keys' values (:meth:`KeyLevels.broader`: a model, its
  brand): when the listings that give it (the hits stating it and the broader key) agree on the
  broader key's value (``IMPLIED_SHARE`` of them), it is stated only if that value is stated or
  confirmed too. "A7 III" under a photo of a Nikon says "Sony" as surely as the word would, so a
  model whose brand the evidence does not state goes to the seller (:func:`implied_value`);
* listing-level keys (condition, accessories) are never taken from references.

A value's tier is its key's own (``<basis>:<level>:<key>``) when the calibration fitted one
(enough held-out candidates of that key), else its level's (``<basis>:<level>``): :func:`tier_for`.
A value is ``stated`` when its tier is enabled and the raw score reaches the tier's
threshold, and no other basis passes its own tier with another value (two calibrated bases
that disagree leave the key to the seller); otherwise the key is ``to_confirm`` with its
candidates. ``abstain=False`` states every key's best candidate regardless (the evaluation's
unguarded comparison rows).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

from ipl.catalog.levels import KeyLevels
from ipl.evidence.calibrate import confidence, passes
from ipl.extract.matcher import value_key

BASES = {"product": ("identical", "similar"), "sku": ("identical", "similar"), "listing": ()}
STATEABLE = {("identical", "product"), ("identical", "sku"), ("similar", "product"), ("photo", "product"),
             ("photo", "sku"), ("caption", "product"), ("caption", "sku")}
DEFAULT_TAU, DEFAULT_ALPHA = 0.05, 1.0
IMPLIED_SHARE = 0.9  # of the listings giving a value, the share that must agree on a broader key's value


def tier_name(basis: str, level: str) -> str:
    return f"{basis}:{level}"


def key_tier_name(basis: str, level: str, key: str) -> str:
    """A key's own tier (keys are case-insensitive): ``similar:product:brand``."""
    return f"{basis}:{level}:{str(key).strip().lower()}"


def tier_for(tiers: Mapping, basis: str, level: str, key: Optional[str] = None) -> Optional[dict]:
    """The tier that judges ``key``'s values from ``basis``: the key's own when the calibration
    fitted one (enabled or not: a key measured short of the target states nothing), else its level's."""
    if key is not None:
        own = tiers.get(key_tier_name(basis, level, key))
        if own is not None:
            return own
    return tiers.get(tier_name(basis, level))


def basis_hits(hits: Sequence[dict], basis: str) -> list[dict]:
    return [h for h in hits if h.get("identical")] if basis == "identical" else list(hits)


def scored_values(hits: Sequence[dict], key: str, tau: float = DEFAULT_TAU, alpha: float = DEFAULT_ALPHA,
                  top: Optional[float] = None) -> list[dict]:
    """The distinct values of ``key`` the hits state, each with its raw score and sources (best first)."""
    if not hits:
        return []
    top = max(float(h.get("score", 0.0)) for h in hits) if top is None else top
    slots: dict[str, dict] = {}
    total = 0.0
    for h in hits:
        value = (h.get("values") or {}).get(key)
        if value is None or not str(value).strip():
            continue
        w = math.exp((float(h.get("score", 0.0)) - top) / tau)
        total += w
        slot = slots.setdefault(value_key(value), {"value": str(value), "weight": 0.0, "sources": []})
        slot["weight"] += w
        slot["sources"].append(h["listing_id"])
    out = [{"value": s["value"], "raw": s["weight"] / (total + alpha), "sources": s["sources"]} for s in slots.values()]
    return sorted(out, key=lambda c: -c["raw"])


def nearest_value(hits: Sequence[dict], key: str) -> Optional[str]:
    """The value of ``key`` the most similar hit stating it gives (None when no hit states it)."""
    stating = [h for h in hits if str((h.get("values") or {}).get(key) or "").strip()]
    return str(max(stating, key=lambda h: float(h.get("score", 0.0)))["values"][key]) if stating else None


def photo_candidates(photo: Optional[Sequence[dict]], hits: Sequence[dict], key: str, level: str) -> list[dict]:
    """A photo classifier's values that may count as evidence. At product level (the product heads:
    closed-set classifiers, which name a known product even for one they never saw) only the value
    the nearest retrieved listing stating the key also gives; SKU level (colour) as they are."""
    photo = list(photo or ())
    if level != "product" or not photo:
        return photo
    near = nearest_value(hits, key)
    return [] if near is None else [p for p in photo if value_key(p["value"]) == value_key(near)]


def score_setting(calibration: Mapping, tier: Optional[Mapping]) -> tuple[float, float, Optional[float]]:
    """(tau, alpha, anchor) of a tier's agreement score: the tier's own (``score``, chosen by the
    calibration's score search), else the calibration's; anchor None: the draft's best similarity."""
    own = (tier or {}).get("score") or {}
    return (float(own.get("tau", calibration.get("tau", DEFAULT_TAU))),
            float(own.get("alpha", calibration.get("alpha", DEFAULT_ALPHA))),
            None if own.get("anchor") is None else float(own["anchor"]))


def key_candidates(hits: Sequence[dict], key: str, level: str, calibration: Mapping,
                   photo: Optional[Sequence[dict]] = None, caption: Optional[dict] = None) -> list[dict]:
    """Every (basis, value) candidate of one key: raw score, calibrated confidence, stateable or not.
    ``photo``: a photo classifier's ``[{"value", "score"}]`` for this key (basis ``photo``);
    ``caption``: the ``{"value", "score"}`` a caption states for it (basis ``caption``)."""
    tiers = calibration.get("tiers") or {}
    top = max((float(h.get("score", 0.0)) for h in hits), default=0.0)
    out = []
    for basis in BASES[level]:
        tier = tier_for(tiers, basis, level, key)
        tau, alpha, anchor = score_setting(calibration, tier)
        for c in scored_values(basis_hits(hits, basis), key, tau, alpha, top if anchor is None else anchor):
            out.append({**c, "basis": basis, "confidence": round(confidence(tier, c["raw"]), 4),
                        "passes": (basis, level) in STATEABLE and passes(tier, c["raw"])})
    tier = tier_for(tiers, "photo", level, key)
    for p in photo_candidates(photo, hits, key, level):
        out.append({"value": p["value"], "raw": p["score"], "sources": [], "basis": "photo",
                    "confidence": round(confidence(tier, p["score"]), 4),
                    "passes": ("photo", level) in STATEABLE and passes(tier, p["score"])})
    if caption and level != "listing":
        tier = tier_for(tiers, "caption", level, key)
        out.append({"value": caption["value"], "raw": caption["score"], "sources": [], "basis": "caption",
                    "confidence": round(confidence(tier, caption["score"]), 4),
                    "passes": ("caption", level) in STATEABLE and passes(tier, caption["score"])})
    return sorted(out, key=lambda c: (-c["passes"], -c["confidence"], c["basis"] != "identical", -c["raw"]))


def assess(keys: Sequence[str], levels: KeyLevels, hits: Sequence[dict], calibration: Mapping,
           confirmed: Optional[Mapping[str, str]] = None, in_domain: bool = True, abstain: bool = True,
           max_candidates: int = 3, photo: Optional[Mapping[str, Sequence[dict]]] = None,
           caption: Optional[Mapping[str, dict]] = None) -> list[dict]:
    """One entry per key (the template's, then confirmed keys outside it), in order. ``photo``:
    key -> a photo classifier's top values with probabilities (the ``photo`` basis); ``caption``:
    key -> ``{"value", "score"}`` a caption states (the ``caption`` basis)."""
    photo = {str(k).lower(): v for k, v in (photo or {}).items()}
    caption = {str(k).lower(): v for k, v in (caption or {}).items()}
    confirmed = dict(confirmed or {})
    ordered = list(dict.fromkeys([*keys, *confirmed]))
    out = []
    for key in ordered:
        level = levels.level(key)
        entry = {"key": key, "level": level, "value": None, "status": "to_confirm", "confidence": 0.0,
                 "basis": None, "sources": [], "candidates": []}
        if key in confirmed:
            entry.update(value=confirmed[key], status="confirmed", confidence=1.0, basis="seller")
            out.append(entry)
            continue
        cands = key_candidates(hits, key, level, calibration, photo.get(key.lower()),
                               caption.get(key.lower())) if in_domain else []
        distinct: dict[str, dict] = {}
        for c in cands:
            distinct.setdefault(value_key(c["value"]), c)
        entry["candidates"] = [{"value": c["value"], "confidence": c["confidence"], "basis": c["basis"],
                                "sources": c["sources"]} for c in list(distinct.values())[:max_candidates]]
        best = cands[0] if cands else None
        rival = next((c for c in cands[1:] if c["passes"] and value_key(c["value"]) != value_key(best["value"])),
                     None) if best is not None and best["passes"] else None
        if rival is not None and abstain:  # two calibrated bases disagree: the seller decides
            best = None
        if best is not None and (best["passes"] or not abstain):
            entry.update(value=best["value"], status="stated", confidence=best["confidence"], basis=best["basis"],
                         sources=best["sources"])
            entry["candidates"] = [c for c in entry["candidates"] if value_key(c["value"]) != value_key(best["value"])]
        out.append(entry)
    return keep_implied(out, levels, hits, max_candidates) if abstain and in_domain else out


def implied_value(hits: Sequence[dict], key: str, value: str, broader: str) -> Optional[str]:
    """The value of the ``broader`` key that the hits stating ``key`` = ``value`` agree on (at least
    ``IMPLIED_SHARE`` of those that state the broader key too), else None (no hit states both, or
    they disagree: the data do not tie the value to one broader value)."""
    counts: dict[str, list] = {}
    for h in hits:
        values = {str(k).strip().lower(): v for k, v in (h.get("values") or {}).items()}
        own, other = values.get(str(key).strip().lower()), values.get(broader)
        if own is None or other is None or not str(other).strip() or value_key(own) != value_key(value):
            continue
        slot = counts.setdefault(value_key(other), [str(other), 0])
        slot[1] += 1
    if not counts:
        return None
    best, n = max(counts.values(), key=lambda c: c[1])
    return best if n >= IMPLIED_SHARE * sum(c[1] for c in counts.values()) else None


def keep_implied(out: list[dict], levels: KeyLevels, hits: Sequence[dict], max_candidates: int = 3) -> list[dict]:
    """Demote a stated product-level value whose implied broader value (:func:`implied_value`) is
    not what the draft states or the seller confirmed for that key: its key goes to the seller, the
    value first among its candidates with ``implies`` naming what it would have said."""
    by_key = {str(a["key"]).strip().lower(): a for a in out}
    # broadest keys first: a brand demoted here is seen demoted by its models after it
    for entry in sorted(out, key=lambda a: len(levels.broader(a["key"]))):
        if entry["status"] != "stated" or entry["level"] != "product":
            continue
        for broader in levels.broader(entry["key"]):
            implied = implied_value(hits, entry["key"], entry["value"], broader)
            held = by_key.get(broader)
            if implied is None or (held is not None and held["status"] in ("stated", "confirmed")
                                   and held["value"] is not None and value_key(held["value"]) == value_key(implied)):
                continue
            demoted = {"value": entry["value"], "confidence": entry["confidence"], "basis": entry["basis"],
                       "sources": entry["sources"], "implies": {"key": held["key"] if held else broader,
                                                                "value": implied}}
            entry.update(value=None, status="to_confirm", confidence=0.0, basis=None, sources=[],
                         candidates=[demoted, *entry["candidates"]][:max_candidates])
            break
    return out


def facts_of(attributes: Sequence[dict]) -> dict[str, str]:
    """The values generation may state: stated and confirmed ones, in order."""
    return {a["key"]: a["value"] for a in attributes if a["status"] in ("stated", "confirmed") and a["value"]}


def unknown_of(attributes: Sequence[dict]) -> list[str]:
    """Keys left to the seller (no fact)."""
    return [a["key"] for a in attributes if a["status"] == "to_confirm"]


def seller_told(notes: Optional[str], vocabulary: Mapping[str, Iterable[str]], matcher) -> set[str]:
    """The keys of which the seller's own notes state a known value ("battery health 80%"): the
    seller said it, so the draft may say it too (the item's condition is otherwise left out)."""
    if not notes:
        return set()
    return {key for key, values in vocabulary.items() if any(matcher.states(str(v), notes) for v in values)}
