"""A draft, stage by stage, independent of where the stages run.

``DraftPipeline(stages, templates, cfg)`` drives five stage calls through a small
``Stages`` interface: ``check`` (SafetyGate), ``predict`` (CategoryPredictor), ``search``
(Retriever), ``extract`` (AttributeExtractor) and ``stream``/``close`` (Generator). The
ingress passes Ray Serve deployment handles; ``LocalStages`` passes the same classes
called in this process (the benchmark's baseline and the unit tests).

``prepare(request)`` runs everything before generation and returns the ``meta`` event
(category with score and source, template, references, attributes with provenance,
price suggestion, fallbacks, timings) plus the prompt; a bad request raises ``ApiError``.
``generate(draft)`` then yields ``("delta", ...)`` events and one last ``done``,
``halted`` or ``error``. Appendix D fallbacks: no category or no retrieval hit -> the
image-only instruction; extraction failure -> no reference; generation timeout -> a reply
telling the seller to write the description by hand, without the partial text.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from ipl.generate.prompts import description_prompt
from ipl.serve.config import ServeConfig
from ipl.serve.errors import ApiError
from ipl.serve.extractor import choose_references
from ipl.serve.generator import truncate_sentence
from ipl.serve.monitor import OutputMonitor

MANUAL = {"en": "We could not write a description for these photos in time. Please describe the item yourself: "
                "brand, model, colour and condition help buyers most.",
          "zh": "暂时无法为这些照片生成描述，请手动填写商品描述（品牌、型号、颜色和成色最能帮助买家）。"}


@dataclass
class DraftRequest:
    photos: list[bytes]
    category: Optional[str] = None
    language: str = "en"
    max_new_tokens: Optional[int] = None


@dataclass
class Draft:
    meta: dict
    prompt: str
    photos: list[bytes]
    language: str
    max_new_tokens: Optional[int]
    started: float
    fallbacks: list[str] = field(default_factory=list)


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def price_suggestion(hits: list[dict], category: Optional[str], min_score: float) -> Optional[dict]:
    refs, basis = choose_references(hits, category, min_score, len(hits))
    prices = [float(h["price"]) for h in refs if isinstance(h.get("price"), (int, float)) and h["price"] > 0]
    if not prices:
        return None
    return {"median": round(statistics.median(prices), 2), "low": round(min(prices), 2), "high": round(max(prices), 2),
            "listings": len(prices), "basis": basis}


class DraftPipeline:
    def __init__(self, stages: Any, templates: dict[str, list[str]], cfg: ServeConfig):
        self.stages, self.templates, self.cfg = stages, templates, cfg

    def validate(self, req: DraftRequest) -> None:
        if req.language not in self.cfg.pipeline.languages:
            raise ApiError("unsupported_language", f"language {req.language!r} is not supported; use one of "
                           f"{', '.join(self.cfg.pipeline.languages)}")
        if req.category is not None and req.category not in self.templates:
            raise ApiError("unknown_category", f"category {req.category!r} is not known; known categories: "
                           f"{', '.join(sorted(self.templates))}")

    async def _timed(self, coro, what: str):
        try:
            return await asyncio.wait_for(coro, self.cfg.pipeline.stage_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError("timeout", f"{what} did not answer within {self.cfg.pipeline.stage_timeout_s:g}s") from None

    async def prepare(self, req: DraftRequest) -> Draft:
        started = time.monotonic()
        self.validate(req)
        timings: dict[str, float] = {}
        t = time.monotonic()
        checked = await self._timed(self.stages.check(req.photos), "the safety check")
        timings["safety_ms"] = _ms(t)
        if "error" in checked:
            raise ApiError(checked["error"]["code"], checked["error"]["message"])
        photos = checked["photos"]

        async def timed(coro, key):
            t0 = time.monotonic()
            out = await self._timed(coro, key.split("_")[0])
            timings[key] = _ms(t0)
            return out

        t = time.monotonic()
        want_category = req.category is None
        if self.cfg.pipeline.concurrent:
            jobs = [timed(self.stages.search(photos), "retrieval_ms")]
            if want_category:
                jobs.append(timed(self.stages.predict(photos), "category_ms"))
            results = await asyncio.gather(*jobs)
            found, predicted = results[0], (results[1] if want_category else None)
        else:
            predicted = await timed(self.stages.predict(photos), "category_ms") if want_category else None
            found = await timed(self.stages.search(photos), "retrieval_ms")
        timings["category_retrieval_ms"] = _ms(t)

        fallbacks: list[str] = []
        if want_category:
            top = predicted["top"][0]
            usable = top["score"] >= self.cfg.retrieval.category_min_score
            category_info = {"name": top["category"] if usable else None, "score": round(top["score"], 4),
                             "source": f"predictor:{predicted['source']}",
                             "candidates": [{"name": c["category"], "score": round(c["score"], 4)} for c in predicted["top"]]}
            category = top["category"] if usable else None
            if not usable:
                fallbacks.append("no_category")
        else:
            category = req.category
            category_info = {"name": category, "score": None, "source": "seller", "candidates": []}
        template = self.templates.get(category, []) if category else []
        hits = found["hits"]
        refs, basis = choose_references(hits, category, self.cfg.retrieval.similar_min_score, len(hits))
        references = [{"listing_id": h["listing_id"], "similarity": round(h["score"], 4), "sku_match": h["identical"],
                       "price": h.get("price"), "category": h.get("category")} for h in refs]
        if category and not refs:
            fallbacks.append("no_retrieval_hit")

        extracted = {"attributes": [], "basis": basis, "references": [], "failed": False}
        if category and refs:
            t = time.monotonic()
            extracted = await self._timed(self.stages.extract(category, template, refs, req.language),
                                          "attribute extraction")
            timings["extract_ms"] = _ms(t)
            if extracted["failed"]:
                fallbacks.append("extraction_failed")

        if "no_category" in fallbacks or "no_retrieval_hit" in fallbacks:
            instruction, prompt = "image_only", description_prompt(None, None, None, req.language)
        elif extracted["failed"] or not extracted["attributes"]:
            instruction = "category_template"
            prompt = description_prompt(category, template, None, req.language)
        else:
            instruction = "rag"
            reference = {a["key"]: a["value"] for a in extracted["attributes"]}
            prompt = description_prompt(category, template, reference, req.language)
        meta = {
            "category": category_info, "template": template, "references": references,
            "reference_basis": basis, "attributes": extracted["attributes"],
            "price_suggestion": price_suggestion(hits, category, self.cfg.retrieval.similar_min_score),
            "instruction": instruction, "fallbacks": fallbacks, "language": req.language,
            "index_version": found.get("version"), "photos": len(photos), "timings": timings,
        }
        timings["prepare_ms"] = _ms(started)
        return Draft(meta, prompt, photos, req.language, req.max_new_tokens, started, fallbacks)

    async def generate(self, draft: Draft) -> AsyncIterator[tuple[str, dict]]:
        cfg = self.cfg.generate
        monitor = OutputMonitor(self.cfg.safety.monitor_holdback_chars)
        timings = draft.meta["timings"]
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s

        def end(t_gen: float) -> None:
            timings["generate_ms"] = _ms(t_gen)
            timings["total_ms"] = _ms(draft.started)
        stream = self.stages.stream(draft.prompt, draft.photos, draft.language, draft.max_new_tokens)
        finish, closed = "stop", False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    await self.stages.close(stream)
                    closed = True
                    draft.fallbacks.append("generation_timeout")
                    end(t0)
                    yield "error", {"code": "generation_timeout", "message": MANUAL.get(draft.language, MANUAL["en"]),
                                    "fallbacks": draft.fallbacks, "timings": timings}
                    return
                if "error" in item:
                    end(t0)
                    yield "error", {"code": "generation_failed", "message": "the description could not be generated; "
                                    + MANUAL.get(draft.language, MANUAL["en"]), "timings": timings}
                    return
                if "text" in item:
                    timings.setdefault("first_token_ms", _ms(t0))
                    text, halt = monitor.feed(item["text"])
                    if halt is None and len(monitor.text) > cfg.max_chars:
                        finish = "length"
                        await self.stages.close(stream)
                        closed = True
                        break
                    if halt is not None:
                        await self.stages.close(stream)
                        closed = True
                        end(t0)
                        yield "halted", {"reason": halt.kind, "message": halt.message, "timings": timings}
                        return
                    if text:
                        yield "delta", {"text": text}
                else:
                    finish = item.get("finish_reason", "stop")
        finally:
            if not closed:
                await self.stages.close(stream)
        final = truncate_sentence(monitor.text, cfg.max_chars) if finish == "length" else monitor.text.strip()
        rest, halt = monitor.finish(final)
        end(t0)
        if halt is not None:
            yield "halted", {"reason": halt.kind, "message": halt.message, "timings": timings}
            return
        if rest:
            yield "delta", {"text": rest}
        yield "done", {"description": final, "finish_reason": finish, "truncated": finish == "length",
                       "fallbacks": draft.fallbacks, "timings": timings}

    async def run(self, req: DraftRequest) -> dict:
        """The whole draft as one JSON-ready reply (the non-streaming endpoint)."""
        draft = await self.prepare(req)
        reply = {**draft.meta, "description": None, "halted": False, "halt": None, "finish_reason": None,
                 "message": None}
        async for kind, data in self.generate(draft):
            if kind == "done":
                reply.update(description=data["description"], finish_reason=data["finish_reason"],
                             truncated=data["truncated"])
            elif kind == "halted":
                reply.update(halted=True, halt={"reason": data["reason"], "message": data["message"]})
            elif kind == "error":
                reply.update(message=data["message"], error_code=data["code"])
        reply["fallbacks"] = draft.fallbacks
        return reply


class LocalStages:
    """The graph's classes called in this process, one after another (no Ray)."""

    def __init__(self, safety, category, retriever, extractor, generator):
        self.safety, self.category, self.retriever = safety, category, retriever
        self.extractor, self.generator = extractor, generator

    def check(self, photos):
        return self.safety.check(photos)

    def predict(self, photos):
        return self.category.predict(photos)

    def search(self, photos):
        return self.retriever.search(photos)

    def extract(self, category, keys, hits, language):
        return self.extractor.extract(category, keys, hits, language)

    def stream(self, prompt, photos, language, max_new_tokens):
        return self.generator.stream(prompt, photos, language, max_new_tokens)

    async def close(self, stream) -> None:
        await stream.aclose()
