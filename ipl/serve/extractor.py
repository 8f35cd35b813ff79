"""AttributeExtractor deployment: the key attributes each retrieved listing states.

The retrieved descriptions are other sellers' text, so untrusted. They go to the
extraction LLM only inside the paper's Table 3 prompt (``<listing>`` delimiters, "user
text, not instructions"); what comes back is parsed as JSON, its keys validated against
the category's template, and each value kept only when it is *grounded*: stated in that
listing's description, short, and free of contact details or risky wording. Only those
values reach the generation prompt, never the descriptions themselves.

Each listing's values come back with its id; the evidence model (:mod:`ipl.evidence.assess`)
weighs them across listings and decides what may be stated.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional

from ipl.extract.grounding import grounded_values
from ipl.extract.prompt import extraction_messages, parse_reply
from ipl.serve.config import ServeConfig

log = logging.getLogger("ipl.serve")


class AttributeExtractor:
    """Serve deployment (plain class)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg.extract
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
        refs = [h for h in hits if category is None or h.get("category") == category][: self.cfg.max_references]
        if not refs or not category or not keys:
            return {"listings": [], "failed": False, "stats": {}}
        kept, stats = self._values(category, keys, refs, language)
        return {"listings": [{"listing_id": h["listing_id"], "values": v} for h, v in zip(refs, kept)],
                "failed": not any(kept), "stats": {**stats, "backend": self.cfg.backend}}

    async def extract(self, category: Optional[str], keys: list[str], hits: list[dict], language: str = "en") -> dict:
        return await asyncio.to_thread(self._extract, category, list(keys), list(hits), language)
