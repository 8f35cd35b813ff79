"""AttributeExtractor deployment: key attributes of the identical (else similar) listings.

The retrieved descriptions are other sellers' text, so untrusted. They go to the
extraction LLM only inside the paper's Table 3 prompt (``<listing>`` delimiters, "user
text, not instructions"); what comes back is parsed as JSON, its keys validated against
the category's template, and each value kept only when it is *grounded*: stated in that
listing's description, short, and free of contact details or risky wording. Only those
values reach the generation prompt, never the descriptions themselves.

Values are then voted across the references (most listings, then highest similarity):
each attribute comes back with the listing ids that state it.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Optional

from ipl.extract.grounding import find_value
from ipl.extract.prompt import extraction_messages, parse_reply
from ipl.serve.config import ServeConfig
from ipl.text.normalize import normalize
from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks

log = logging.getLogger("ipl.serve")
_TERMS = RiskTerms()


def choose_references(hits: list[dict], category: Optional[str], min_score: float, limit: int) -> tuple[list[dict], str]:
    """The identical hits of ``category`` if any ("identical"), else its similar ones above ``min_score``."""
    same = [h for h in hits if category is None or h.get("category") == category]
    identical = [h for h in same if h.get("identical")]
    if identical:
        return identical[:limit], "identical"
    similar = [h for h in same if h.get("score", -1) >= min_score]
    return similar[:limit], "similar" if similar else "none"


def grounded_values(values: dict, description: str, keys: list[str], max_chars: int) -> dict[str, str]:
    """The values whose key is in the template and which the description states."""
    by_lower = {k.lower(): k for k in keys}
    low = normalize(description or "").lower()
    out = {}
    for raw_key, raw in (values or {}).items():
        key = by_lower.get(str(raw_key).strip().lower())
        if key is None or raw is None or isinstance(raw, (dict, list)):
            continue
        value = normalize(str(raw)).strip()
        if not value or len(value) > max_chars or any(c in value for c in "<>{}\n"):
            continue
        if find_pii(value) or find_risks(value, _TERMS):
            continue
        if find_value(value, description or "", low) < 0:
            continue
        out[key] = value
    return out


def vote(per_listing: list[tuple[dict, dict[str, str]]], keys: list[str], basis: str) -> list[dict]:
    """One value per key: most supporting listings, then the highest similarity; template order."""
    support: dict[str, dict[str, dict]] = defaultdict(dict)
    for hit, values in per_listing:
        for key, value in values.items():
            slot = support[key].setdefault(value.lower(), {"value": value, "ids": [], "best": -2.0})
            slot["ids"].append(hit["listing_id"])
            slot["best"] = max(slot["best"], float(hit.get("score", 0)))
    out = []
    for key in keys:
        if key not in support:
            continue
        best = max(support[key].values(), key=lambda s: (len(s["ids"]), s["best"]))
        out.append({"key": key, "value": best["value"], "sources": best["ids"], "basis": basis,
                    "agreement": round(len(best["ids"]) / sum(len(s["ids"]) for s in support[key].values()), 3)})
    return out


class AttributeExtractor:
    """Serve deployment (plain class)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg.extract
        self.min_score = cfg.retrieval.similar_min_score
        self.llm = None
        if self.cfg.backend == "llm":
            from ipl.extract.llm import make_extractor

            llm_cfg = self.cfg.llm.model_copy(update={"model": self.cfg.llm.model or str(cfg.vlm_dir)})
            self.llm = make_extractor(llm_cfg)

    def _values(self, category: str, keys: list[str], refs: list[dict], language: str) -> tuple[list[dict], dict]:
        if self.llm is not None:
            convs = [extraction_messages(category, keys, h.get("description") or "", language) for h in refs]
            replies = self.llm.generate(convs)
            raw = [parse_reply(r, keys)[0] for r in replies]
        else:
            raw = []
            for h in refs:
                attrs = h.get("attributes")
                if isinstance(attrs, str):
                    try:
                        attrs = json.loads(attrs)
                    except ValueError:
                        attrs = {}
                raw.append(attrs if isinstance(attrs, dict) else {})
        kept = [grounded_values(v, h.get("description") or "", keys, self.cfg.max_value_chars) for v, h in zip(raw, refs)]
        stats = {"proposed": sum(len(v) for v in raw), "grounded": sum(len(v) for v in kept)}
        return kept, stats

    def _extract(self, category: Optional[str], keys: list[str], hits: list[dict], language: str) -> dict:
        refs, basis = choose_references(hits, category, self.min_score, self.cfg.max_references)
        if not refs or not category or not keys:
            return {"attributes": [], "basis": basis, "references": [], "failed": False, "stats": {}}
        kept, stats = self._values(category, keys, refs, language)
        attributes = vote(list(zip(refs, kept)), keys, basis)
        return {"attributes": attributes, "basis": basis, "references": [h["listing_id"] for h in refs],
                "failed": not attributes, "stats": {**stats, "backend": self.cfg.backend}}

    async def extract(self, category: Optional[str], keys: list[str], hits: list[dict], language: str = "en") -> dict:
        return await asyncio.to_thread(self._extract, category, list(keys), list(hits), language)
