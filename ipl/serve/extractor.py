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
import logging
import threading
from typing import Optional

from ipl.extract.grounding import grounded_values
from ipl.extract.prompt import extraction_messages, parse_reply
from ipl.serve.config import ServeConfig

log = logging.getLogger("ipl.serve")


class AttributeExtractor:
    """Serve deployment (plain class).

    The extraction LLM is never called from several threads at once: with
    ``extract.llm.backend=serve_llm`` the prompts go to the Generator's LLMServer through its
    handle, asynchronously (the engine batches them); with ``transformers`` the model lives in one
    worker thread and every request's prompts queue for it (``engine_calls`` counts the calls and
    ``max_concurrent_engine_calls`` records that they never overlapped)."""

    def __init__(self, cfg: ServeConfig, llm_handle=None):
        from concurrent.futures import ThreadPoolExecutor

        self.cfg = cfg.extract
        self.llm = None
        self.handle = llm_handle
        self.model_id = cfg.generate.served_model_name
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipl-extract-llm")
        self.engine_stats = {"engine_calls": 0, "max_concurrent_engine_calls": 0}
        self._inside = 0
        self._lock = threading.Lock()
        if self.cfg.backend == "llm" and self.cfg.llm.backend == "serve_llm":
            if llm_handle is None:
                raise ValueError("extract.llm.backend=serve_llm needs the LLMServer handle (ipl.serve.app.build)")
        elif self.cfg.backend == "llm":
            from ipl.extract.llm import make_extractor

            llm_cfg = self.cfg.llm.model_copy(update={"model": self.cfg.llm.model or str(cfg.vlm_dir)})
            self.llm = make_extractor(llm_cfg)

    def get_stats(self) -> dict:
        return dict(self.engine_stats)

    def _engine_generate(self, convs: list[list[dict]]) -> list[str]:
        """On the one engine thread only."""
        with self._lock:
            self._inside += 1
            self.engine_stats["engine_calls"] += 1
            self.engine_stats["max_concurrent_engine_calls"] = max(self.engine_stats["max_concurrent_engine_calls"],
                                                                   self._inside)
        try:
            return self.llm.generate(convs)
        finally:
            with self._lock:
                self._inside -= 1

    @staticmethod
    def _offline(keys: list[str], refs: list[dict]) -> list[dict]:
        from ipl.runtime import json_object

        return [json_object(h.get("attributes")) for h in refs]

    def _ground(self, keys: list[str], refs: list[dict], raw: list[dict]) -> tuple[list[dict], dict]:
        kept = [grounded_values(v, h.get("description") or "", keys, self.cfg.max_value_chars) for v, h in zip(raw, refs)]
        return kept, {"proposed": sum(len(v) for v in raw), "grounded": sum(len(v) for v in kept)}

    def _values(self, category: str, keys: list[str], refs: list[dict], language: str) -> tuple[list[dict], dict]:
        if self.llm is not None:
            convs = [extraction_messages(category, keys, h.get("description") or "", language) for h in refs]
            replies = self._engine.submit(self._engine_generate, convs).result()
            raw = [parse_reply(r, keys)[0] for r in replies]
        else:
            raw = self._offline(keys, refs)
        return self._ground(keys, refs, raw)

    def _extract(self, category: Optional[str], keys: list[str], hits: list[dict], language: str) -> dict:
        refs = [h for h in hits if category is None or h.get("category") == category][: self.cfg.max_references]
        if not refs or not category or not keys:
            return {"listings": [], "failed": False, "stats": {}}
        kept, stats = self._values(category, keys, refs, language)
        return {"listings": [{"listing_id": h["listing_id"], "values": v} for h, v in zip(refs, kept)],
                "failed": not any(kept), "stats": {**stats, "backend": self.cfg.backend}}

    async def extract(self, category: Optional[str], keys: list[str], hits: list[dict], language: str = "en") -> dict:
        if self.handle is not None and self.cfg.backend == "llm":  # the LLMServer, asynchronously
            from ipl.serve.llm_server import extract_chat

            keys, hits = list(keys), list(hits)
            refs = [h for h in hits if category is None or h.get("category") == category][: self.cfg.max_references]
            if not refs or not category or not keys:
                return {"listings": [], "failed": False, "stats": {}}
            convs = [extraction_messages(category, keys, h.get("description") or "", language) for h in refs]
            replies = await extract_chat(self.handle, self.model_id, convs, self.cfg.llm.max_new_tokens)
            kept, stats = self._ground(keys, refs, [parse_reply(r, keys)[0] for r in replies])
            return {"listings": [{"listing_id": h["listing_id"], "values": v} for h, v in zip(refs, kept)],
                    "failed": not any(kept), "stats": {**stats, "backend": "serve_llm"}}
        return await asyncio.to_thread(self._extract, category, list(keys), list(hits), language)
