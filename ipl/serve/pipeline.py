"""A draft, stage by stage, independent of where the stages run.

``DraftPipeline(stages, templates, cfg)`` drives four stage calls through a small
``Stages`` interface: ``check`` (SafetyGate: the one decode), ``perceive`` (Perception: the one
embedding, category, retrieval, photo colour and the guard's vocabulary), ``extract``
(AttributeExtractor) and ``stream``/``close`` (Generator). The
ingress passes Ray Serve deployment handles; ``LocalStages`` passes the same classes
called in this process (the benchmark's baseline and the unit tests).

With ``caption.enabled`` the Generator also captions the photos (``caption``) and Perception
reads the caption (``read_caption``: its cosine to the photos, its text-index hits); the CQE
vote decides whether the caption's values join the evidence (basis ``caption``), whether it
goes into the prompt and whether its text ranking reorders the references (the reply's
``caption``: text, keep, verdict with every judge's vote, values, fused reference order).

``prepare(request)`` runs everything before generation and returns the ``meta`` event
(category with score, source and calibrated gate, template, references, ``attributes``:
every template key with value, ``status`` stated | to_confirm | confirmed, ``confidence``,
basis, sources and candidates, the ``facts`` given to the model, price suggestion,
fallbacks, timings) plus the prompt; a bad request raises ``ApiError``. Only facts
(calibrated evidence or the seller's ``confirmed`` values) reach the prompt; unknown template
slots are left out and named unknown; photos unlike anything in the index
(``out_of_domain``) state no product-level value. ``generate(draft)`` then yields
``("delta", ...)`` events and one last ``done`` (with the ``verification`` of the text
against the evidence; its ``description`` is the verified text), ``halted`` or ``error``;
the known values the evidence does not support are blocked while decoding. Appendix D
fallbacks: no category or no retrieval hit -> the image-only instruction; extraction failure
-> no facts; generation timeout -> a reply telling the seller to write the description by
hand, without the partial text.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from ipl.catalog.levels import KeyLevels
from ipl.evidence.assess import assess, facts_of, seller_told, unknown_of
from ipl.evidence.verify import verify
from ipl.extract.matcher import AttributeMatcher, value_key
from ipl.generate.guard import blocked_values
from ipl.generate.prompts import clean_notes, description_prompt
from ipl.serve.config import ServeConfig
from ipl.serve.errors import ApiError
from ipl.serve.generator import truncate_sentence
from ipl.serve.monitor import OutputMonitor

MANUAL = {"en": "We could not write a description for these photos in time. Please describe the item yourself: "
                "brand, model, colour and condition help buyers most.",
          "zh": "暂时无法为这些照片生成描述，请手动填写商品描述（品牌、型号、颜色和成色最能帮助买家）。"}
REPEATED = {"en": "The description only repeated itself. Please describe the item yourself: brand, model, colour and "
                  "condition help buyers most.",
            "zh": "生成的描述只是在重复，请手动填写商品描述（品牌、型号、颜色和成色最能帮助买家）。"}


@dataclass
class DraftRequest:
    photos: list[bytes]
    category: Optional[str] = None
    language: str = "en"
    max_new_tokens: Optional[int] = None
    confirmed: dict[str, str] = field(default_factory=dict)
    notes: Optional[str] = None  # the seller's own words (untrusted; ipl.generate.prompts.clean_notes)
    endpoint: str = "draft"  # which API asked (a metrics tag)


@dataclass
class Draft:
    meta: dict
    prompt: str
    photos: list[bytes]
    language: str
    max_new_tokens: Optional[int]
    started: float
    fallbacks: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    check: dict = field(default_factory=dict)
    stream: Any = None  # the Generator stream once admitted (DraftPipeline.admit)
    endpoint: str = "draft"


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def price_suggestion(hits: list[dict], facts: dict, levels: KeyLevels) -> Optional[dict]:
    """Median price of the retrieved listings of the same product: only when brand/model-level facts
    are known, from the listings that state the same product-level values."""
    product = {k: value_key(v) for k, v in facts.items() if levels.level(k) == "product"}
    if not product:
        return None
    same = [h for h in hits if all(value_key((h.get("values") or {}).get(k) or "") == v for k, v in product.items())]
    prices = [float(h["price"]) for h in same if isinstance(h.get("price"), (int, float)) and h["price"] > 0]
    if not prices:
        return None
    return {"median": round(statistics.median(prices), 2), "low": round(min(prices), 2), "high": round(max(prices), 2),
            "listings": len(prices), "basis": "same product: " + ", ".join(f"{k}={facts[k]}" for k in product)}


def caption_skip(tiers: dict, gain: Optional[dict], min_gain: float) -> Optional[str]:
    """Why a draft should not caption its photos (None: caption): no ``caption:*`` tier of the index
    reaches the target precision, or the index measured the kept captions adding a right value no
    other basis states on fewer than ``min_gain`` of its held-out queries."""
    if not any(t.get("enabled") for n, t in tiers.items() if n.startswith("caption:")):
        return "no caption tier of this index reaches the target precision"
    if gain is not None and float(gain.get("share") or 0.0) < min_gain:
        return (f"the index's captions added a right value no other evidence states on {gain.get('share', 0):.1%} "
                f"of its held-out queries (caption.min_gain {min_gain:g})")
    return None


def category_gate(configured: Optional[float], calibration: dict) -> Optional[float]:
    """The score from which the predicted category is used: configured, else the index's calibrated
    category tier; None (never) when that tier is disabled or missing."""
    if configured is not None:
        return configured
    tier = (calibration.get("tiers") or {}).get("category") or {}
    return tier.get("threshold") if tier.get("enabled") else None


class DraftPipeline:
    def __init__(self, stages: Any, templates: dict[str, list[str]], cfg: ServeConfig,
                 levels: Optional[KeyLevels] = None, observer: Any = None):
        self.stages, self.templates, self.cfg = stages, templates, cfg
        self.observer = observer  # ipl.serve.metrics.DraftMetrics in the ingress (prepared / finished)
        self.levels = levels or KeyLevels()
        self.matcher = AttributeMatcher(cfg.evidence.synonyms)
        self._vocab_cache: dict = {}

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
        photos, found = await self._screen_and_perceive(req, timings)
        want_category = req.category is None
        predicted = found.get("category")
        calibration = found.get("evidence") or {}

        fallbacks: list[str] = []
        if want_category:
            top = predicted["top"][0]
            gate = category_gate(self.cfg.retrieval.category_min_score, calibration)
            usable = gate is not None and top["score"] >= gate
            category_info = {"name": top["category"] if usable else None, "score": round(top["score"], 4),
                             "source": f"predictor:{predicted['source']}", "threshold": gate,
                             "candidates": [{"name": c["category"], "score": round(c["score"], 4)} for c in predicted["top"]]}
            category = top["category"] if usable else None
            if not usable:
                fallbacks.append("no_category")
        else:
            category = req.category
            category_info = {"name": category, "score": None, "source": "seller", "candidates": []}
        template = self.templates.get(category, []) if category else []
        hits = [h for h in found["hits"] if h.get("score", -1) >= self.cfg.retrieval.similar_min_score]
        k = int(calibration.get("k") or self.cfg.extract.max_references)
        same = [h for h in hits if h.get("category") == category][:k] if category else []
        floor = (calibration.get("in_domain") or {}).get("min_similarity")
        top_similarity = max((h["score"] for h in found["hits"]), default=None)
        in_domain = top_similarity is not None and (floor is None or top_similarity >= floor)
        references = [{"listing_id": h["listing_id"], "similarity": round(h["score"], 4), "sku_match": h["identical"],
                       "price": h.get("price"), "category": h.get("category")} for h in same]
        if category and not same:
            fallbacks.append("no_retrieval_hit")
        if category and same and not in_domain:
            fallbacks.append("out_of_domain")

        values: dict[str, dict] = {}
        if category and same and in_domain and template:
            t = time.monotonic()
            extracted = await self._timed(self.stages.extract(category, template, same, req.language),
                                          "attribute extraction")
            timings["extract_ms"] = _ms(t)
            values = {x["listing_id"]: x["values"] for x in extracted["listings"]}
            if extracted["failed"]:
                fallbacks.append("extraction_failed")
        ev = self.cfg.evidence
        evidence_hits = [{**h, "values": values.get(h["listing_id"], {})} for h in same]
        vocabulary, leads, elsewhere = await self._vocabulary(category, found) if category else ({}, {}, [])
        caption = None
        tiers = calibration.get("tiers") or {}
        skip = caption_skip(tiers, calibration.get("caption_gain"), self.cfg.caption.min_gain)
        if self.cfg.caption.enabled and category and self.cfg.caption.skip_uncalibrated and skip:
            caption = {"text": None, "keep": False, "skipped": f"{skip}; caption.skip_uncalibrated"}
        elif self.cfg.caption.enabled and category:
            t = time.monotonic()
            caption = await self._caption(photos, category, template, vocabulary, evidence_hits, found, calibration,
                                          req.language, k)
            timings["caption_ms"] = _ms(t)
            if caption.get("fused_references"):
                order = {lid: n for n, lid in enumerate(caption["fused_references"])}
                references.sort(key=lambda r: order.get(r["listing_id"], len(order)))
        use_caption = bool(caption and caption["keep"])
        caption_values = caption["evidence_values"] if use_caption and self.cfg.caption.evidence else None
        attributes = assess(template, self.levels, evidence_hits, calibration, req.confirmed, in_domain, ev.abstain,
                            ev.max_candidates, found.get("photo") if category else None, caption_values)
        facts = facts_of(attributes)
        scored = set(self.levels.scored([a["key"] for a in attributes]))
        # the keys the draft leaves out: the scored ones without a fact, and the item's own condition
        # (listing-level keys) unless the seller gave it (confirmed, or a known value in the notes)
        untold = [k for k in unknown_of(attributes) if k not in scored]
        told = seller_told(req.notes, {k: vocabulary.get(k, ()) for k in untold}, self.matcher)
        unknown = [k for k in unknown_of(attributes) if k not in told]
        cue = caption["text"] if use_caption and self.cfg.caption.prompt_cue else None
        if not category or "no_retrieval_hit" in fallbacks:
            instruction, prompt = "image_only", description_prompt(None, None, None, req.language, notes=req.notes)
        elif not ev.abstain:  # the unguarded comparison: the whole template, every best candidate as reference
            instruction = "rag" if facts else "category_template"
            prompt = description_prompt(category, template, facts or None, req.language, notes=req.notes, caption=cue)
        elif facts:
            instruction, prompt = "rag", description_prompt(category, list(facts), facts, req.language, unknown,
                                                            req.notes, caption=cue)
        else:
            instruction = "category_template"
            prompt = description_prompt(category, [], None, req.language, unknown, req.notes, caption=cue)
        check = {"facts": {k: v for k, v in facts.items() if k in scored}, "unknown": unknown,
                 "vocabulary": vocabulary, "leads": leads, "elsewhere": elsewhere, "notes": clean_notes(req.notes)}
        blocked = blocked_values(check["facts"], unknown, vocabulary, self.matcher, ev.max_blocked,
                                 leads, elsewhere) if ev.guard else []
        meta = {
            "category": category_info, "template": template, "references": references,
            "attributes": attributes, "facts": facts, "to_confirm": [a["key"] for a in attributes
                                                                     if a["status"] == "to_confirm"],
            "evidence": {"in_domain": in_domain, "top_similarity": None if top_similarity is None
                         else round(top_similarity, 4), "in_domain_floor": floor,
                         "calibrated": bool(calibration), "disabled": calibration.get("disabled", []),
                         "guarded_values": len(blocked)},
            "price_suggestion": price_suggestion(evidence_hits, facts, self.levels),
            "instruction": instruction, "fallbacks": fallbacks, "language": req.language,
            "notes": clean_notes(req.notes) or None,
            "caption": None if caption is None else {k: v for k, v in caption.items() if k != "evidence_values"},
            "index_version": found.get("version"), "photos": len(photos), "timings": timings,
        }
        timings["prepare_ms"] = _ms(started)
        if self.observer is not None:
            self.observer.prepared(meta)
        return Draft(meta, prompt, photos, req.language, req.max_new_tokens, started, fallbacks, blocked, check,
                     endpoint=req.endpoint)

    async def _caption(self, photos, category: str, template: list[str], vocabulary: dict, evidence_hits: list,
                       found: dict, calibration: dict, language: str, k: int) -> dict:
        """CASLIE: the Generator captions the photos, the CQE judges vote (settings of the index that
        calibrated them), and a kept caption's text hits are fused with the image hits. Returns the
        reply's ``caption`` (text, keep, votes, the values it states, the fused reference order)."""
        from ipl.caption.cqe import CaptionCase, EncoderJudge, EvidenceJudge, LLMJudge, caption_values, vote
        from ipl.caption.fusion import reciprocal_rank_fusion
        from ipl.caption.prompts import caption_keys
        from ipl.index.captions import candidates_of

        cc = self.cfg.caption
        made = await self._timed(self.stages.caption(photos, category, caption_keys(template), language,
                                                     cc.max_new_tokens), "captioning")
        text = made.get("caption") or ""
        read = await self._timed(self.stages.read_caption(text, found.get("vector"), found.get("fingerprint")),
                                 "caption reading")
        settings = read.get("caption_settings") or {}
        judges = {"encoder": EncoderJudge(None, settings.get("encoder_threshold")),
                  "evidence": EvidenceJudge(self.matcher),
                  "llm": LLMJudge(lambda prompt, photos, _a=made.get("answer"): _a or "")}
        names = settings.get("judges") or list(judges)
        keys = self.levels.scored(template)
        case = CaptionCase(caption=text, category=category, vocabulary={key: vocabulary.get(key, []) for key in keys},
                           candidates=candidates_of(evidence_hits, keys, category, k,
                                                    calibration.get("tau", 0.05), calibration.get("alpha", 1.0)),
                           image_caption_cosine=read.get("cosine"), language=language)
        verdict = vote([judges[n] for n in names], case)
        keep = verdict.keep and bool(settings)  # an index built without captions calibrated nothing: shown, not used
        stated = caption_values(text, case.vocabulary, self.matcher) if text else {}
        share = verdict.yes / max(1, len(verdict.votes))
        fused = []
        if keep and cc.fuse_retrieval and read.get("text_hits"):
            image_rank = [h["listing_id"] for h in evidence_hits]
            text_rank = [h["listing_id"] for h in read["text_hits"] if h.get("category") == category]
            fused = [lid for lid, _ in reciprocal_rank_fusion([image_rank, text_rank], settings.get("fusion_k", 60.0),
                                                             [1.0, settings.get("text_weight", 1.0)])]
        return {"text": text, "keep": keep, "verdict": verdict.to_dict(), "values": stated,
                "image_caption_cosine": read.get("cosine"), "calibrated": bool(settings),
                "fused_references": fused[:k], "evidence_values": {key: {"value": v, "score": share}
                                                                   for key, v in stated.items()}}

    async def _perceived(self, coro, timings: dict) -> dict:
        t = time.monotonic()
        found = await self._timed(coro, "perception")
        timings["perception_ms"] = _ms(t)
        return found

    async def _screen_and_perceive(self, req: DraftRequest, timings: dict) -> tuple[list, dict]:
        """(the photos decoded once by the SafetyGate, Perception's reply). Where the screen needs no
        CLIP embedding, Perception starts on the decoded photos while the screen runs (the gate's
        ``check_stream`` sends them before its verdict) and is cancelled when the verdict refuses;
        where it does (Perception reuses the screen's vectors), one after the other."""
        t = time.monotonic()
        stream = self.stages.check_stream(req.photos)
        perceiving: Optional[asyncio.Future] = None
        try:
            checked = await self._timed(stream.__anext__(), "the safety check")
            if "error" not in checked and not checked.get("screened", True):
                perceiving = asyncio.ensure_future(self._perceived(
                    self.stages.perceive(checked["images"], req.category), timings))
                verdict = await self._timed(stream.__anext__(), "the safety check")
                checked = {**checked, **verdict}
            timings["safety_ms"] = _ms(t)
            if "error" in checked:
                raise ApiError(checked["error"]["code"], checked["error"]["message"])
            photos = checked["images"]  # decoded once by the SafetyGate: pixels from here on
            if perceiving is None:
                found = await self._perceived(self.stages.perceive(photos, req.category, checked.get("vectors"),
                                                                   checked.get("fingerprint")), timings)
            else:
                found = await perceiving
            return photos, found
        finally:
            if perceiving is not None and not perceiving.done():  # refused, timed out or cancelled
                perceiving.cancel()
                await asyncio.gather(perceiving, return_exceptions=True)
            await self.stages.close(stream)

    async def _vocabulary(self, category: str, found: dict) -> tuple[dict, dict, list]:
        """The category's known values, the index's distinctive leading words (``leads``) and the
        other categories' names this category's sellers rarely write (``elsewhere``): from the
        perception reply when it named this category, else looked up (cached per index version)."""
        given = found.get("vocabulary") or {}
        if given.get("category") == category:
            return given.get("keys") or {}, given.get("leads") or {}, given.get("elsewhere") or []
        key = (found.get("version"), category)
        if key not in self._vocab_cache:
            if len(self._vocab_cache) > 256:
                self._vocab_cache.clear()
            found = await self._timed(self.stages.vocabulary(category), "the vocabulary lookup")
            self._vocab_cache[key] = (found.get("keys") or {}, found.get("leads") or {}, found.get("elsewhere") or [])
        return self._vocab_cache[key]

    async def admit(self, draft: Draft) -> None:
        """Reserve the draft's generation capacity before anything is sent: open the Generator stream
        and wait for its first item (the Generator's ``admitted``). A full Generator (Serve's
        BackPressureError, which the ingress answers as a JSON 503) or no slot within
        ``pipeline.admission_timeout_s`` (503 ``overloaded``) fails here, before the 200."""
        if draft.stream is not None:
            return
        t = time.monotonic()
        stream = self.stages.stream(draft.prompt, draft.photos, draft.language, draft.max_new_tokens, draft.blocked)
        try:
            first = await asyncio.wait_for(stream.__anext__(), self.cfg.pipeline.admission_timeout_s)
        except asyncio.TimeoutError:
            await self.stages.close(stream)
            raise ApiError("overloaded", f"no generation capacity within {self.cfg.pipeline.admission_timeout_s:g}s; "
                           "retry shortly", retry_after=self.cfg.pipeline.retry_after_s) from None
        except BaseException:
            await self.stages.close(stream)
            raise
        if "admitted" not in first:  # the Generator's stream always opens with it
            await self.stages.close(stream)
            raise RuntimeError(f"the Generator's stream did not start with 'admitted': {sorted(first)}")
        draft.stream = stream
        draft.meta["timings"]["admission_ms"] = _ms(t)

    async def generate(self, draft: Draft) -> AsyncIterator[tuple[str, dict]]:
        """``("delta", ...)`` events, then one ``done`` | ``halted`` | ``error`` (reported to the observer)."""
        async for kind, data in self._generate(draft):
            if kind != "delta" and self.observer is not None:
                self.observer.finished(draft.endpoint, kind, data, draft.meta, draft.fallbacks)
            yield kind, data

    async def _generate(self, draft: Draft) -> AsyncIterator[tuple[str, dict]]:
        cfg = self.cfg.generate
        monitor = OutputMonitor(self.cfg.safety.monitor_holdback_chars,
                                cjk_holdback=self.cfg.safety.monitor_cjk_holdback_chars)
        timings = draft.meta["timings"]
        await self.admit(draft)
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s

        def end(t_gen: float) -> None:
            timings["generate_ms"] = _ms(t_gen)
            timings["total_ms"] = _ms(draft.started)
        stream = draft.stream
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        finish, closed = "stop", False
        repetition = None  # the Generator's repeats edit so far (ipl.generate.repetition; None: off)
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
                repetition = item.get("repetition", repetition)
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
                        timings.setdefault("first_text_ms", _ms(draft.started))
                        yield "delta", {"text": text}
                elif "finish_reason" in item:
                    finish = item["finish_reason"]
                    usage = {"prompt_tokens": int(item.get("prompt_tokens") or 0),
                             "completion_tokens": int(item.get("tokens") or 0)}
        finally:
            if not closed:
                await self.stages.close(stream)
        final = truncate_sentence(monitor.text, cfg.max_chars) if finish == "length" else monitor.text.strip()
        ended = bool(repetition and repetition["ended"])
        if ended:
            draft.fallbacks.append("repetition_ended")
        if not final and ended:
            end(t0)
            yield "error", {"code": "generation_failed", "message": REPEATED.get(draft.language, REPEATED["en"]),
                            "fallbacks": draft.fallbacks, "timings": timings}
            return
        rest, halt = monitor.finish(final)
        if halt is not None:
            end(t0)
            yield "halted", {"reason": halt.kind, "message": halt.message, "timings": timings}
            return
        verification = None
        if self.cfg.evidence.verify and draft.check:
            t_v = time.monotonic()
            final, verification = verify(final, draft.check["facts"], draft.check["unknown"],
                                         draft.check["vocabulary"], self.matcher, self.cfg.evidence.add_missing,
                                         draft.language, draft.check.get("leads"), draft.check.get("elsewhere"),
                                         draft.check.get("notes"))
            timings["verify_ms"] = _ms(t_v)
        end(t0)
        if rest:
            timings.setdefault("first_text_ms", _ms(draft.started))
            yield "delta", {"text": rest}
        yield "done", {"description": final, "finish_reason": finish, "truncated": finish == "length",
                       "verification": verification, "repetition": repetition, "fallbacks": draft.fallbacks,
                       "timings": timings,
                       "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}}

    async def run(self, req: DraftRequest) -> dict:
        """The whole draft as one JSON-ready reply (the non-streaming endpoint)."""
        draft = await self.prepare(req)
        await self.admit(draft)  # overload is a 503 before any reply
        reply = {**draft.meta, "description": None, "halted": False, "halt": None, "finish_reason": None,
                 "message": None}
        async for kind, data in self.generate(draft):
            if kind == "done":
                reply.update(description=data["description"], finish_reason=data["finish_reason"],
                             truncated=data["truncated"], verification=data["verification"], usage=data["usage"],
                             repetition=data["repetition"])
            elif kind == "halted":
                reply.update(halted=True, halt={"reason": data["reason"], "message": data["message"]})
            elif kind == "error":
                reply.update(message=data["message"], error_code=data["code"])
        reply["fallbacks"] = draft.fallbacks
        return reply


class LocalStages:
    """The graph's classes called in this process, one after another (no Ray)."""

    def __init__(self, safety, perception, extractor, generator):
        self.safety, self.perception = safety, perception
        self.extractor, self.generator = extractor, generator

    def check_stream(self, photos):
        return self.safety.check_stream(photos)

    def perceive(self, images, category=None, vectors=None, fingerprint=None):
        return self.perception.perceive(images, category, vectors, fingerprint)

    def extract(self, category, keys, hits, language):
        return self.extractor.extract(category, keys, hits, language)

    def vocabulary(self, category):
        return self.perception.vocabulary(category)

    def caption(self, photos, category, keys, language, max_new_tokens):
        return self.generator.caption(photos, category, keys, language, max_new_tokens)

    def read_caption(self, caption, vector=None, fingerprint=None):
        return self.perception.read_caption(caption, vector, fingerprint)

    def stream(self, prompt, photos, language, max_new_tokens, blocked=None):
        return self.generator.stream(prompt, photos, language, max_new_tokens, blocked)

    async def close(self, stream) -> None:
        await stream.aclose()
