"""The RAG ablation (paper Table 7) through the real retrieval and extraction path.

1. :func:`prepare_examples`: each held-out listing goes through the Serve graph's own
   classes (SafetyGate, Perception, AttributeExtractor) driven by
   :class:`DraftPipeline.prepare` in this process, exactly as a draft request: the predicted
   category, its template and the validated reference values, with the Appendix D
   fallbacks. The query listing (``indexed_sku``) or its whole SKU (``unseen_sku``) is removed
   from the hits (:mod:`ipl.eval.sets`).
2. :func:`condition_prompt`: the four rows share that one preparation and differ only in what
   the Table 2 prompt is given: image; + category (and template); + reference; both.
3. :func:`generate_all`: the descriptions come from Ray actors each holding the VLM (the same
   loader and image sizing as the Generator deployment). Each finished batch is appended to
   ``generations.jsonl`` keyed by model, prompt and photos, so an interrupted run resumes and
   a re-run only generates what changed.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ipl.eval.config import EvalConfig
from ipl.eval.scoring import same_spu_colour
from ipl.generate.prompts import description_prompt
from ipl.models.vlm import capped_policy, image_policy_of, model_fingerprint
from ipl.serve.pipeline import DraftPipeline, DraftRequest, LocalStages

log = logging.getLogger("ipl.eval")




def _digest(photos) -> str:
    """One key for a list of photos (bytes or pixel arrays), by content."""
    h = hashlib.sha1()
    for p in photos:
        if isinstance(p, (bytes, bytearray, memoryview)):
            h.update(bytes(p))
        else:
            a = np.ascontiguousarray(p)
            h.update(repr((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
        h.update(b"|")
    return h.hexdigest()


class EvalStages(LocalStages):
    """The pre-generation stages in this process; ``exclude`` hides one listing or one SKU from
    retrieval (``{"listing_id": ...}`` or ``{"sku_id": ...}``). Captions come from the index's
    offline captions of the listing (``current_caption``: what the Generator would have written
    with the same VLM and prompt; the LLM judge's answer with it)."""

    def __init__(self, scfg):
        from ipl.serve.deployments import Perception, SafetyGate
        from ipl.serve.extractor import AttributeExtractor

        super().__init__(SafetyGate(scfg), Perception(scfg), AttributeExtractor(scfg), None)
        self.k = scfg.retrieval.k
        self.exclude: dict = {}
        self.last_hits: list[dict] = []
        self.current_caption: Optional[tuple] = None
        self._memo: Optional[dict] = None  # on from start_example: one held-out listing's results
        self.memo_hits = 0

    def start_example(self, exclude: Optional[dict] = None, caption: Optional[tuple] = None) -> None:
        """A new held-out listing: its exclusion and caption; forget the last listing's results.

        One listing goes through the graph's preparation up to four times (the system, the
        unguarded comparison, the captioned and the confirmed rows) with the same photos: the
        safety screen and the perception (embedding, retrieval, category, photo colour) run once
        per listing and category asked, and the other calls get a copy of that result."""
        self.exclude = exclude or {}
        self.current_caption = caption
        self._memo = {}

    async def _once(self, key, make):
        if self._memo is None:
            return await make()
        if key in self._memo:
            self.memo_hits += 1
        else:
            self._memo[key] = await make()
        return copy.deepcopy(self._memo[key])

    async def check_stream(self, photos):
        """The SafetyGate's check, memoized, as one message: Perception (memoized too) waits for it."""
        checked = await self._once(("check", _digest(photos)), lambda: self.safety.check(photos))
        yield {**checked, "screened": True}

    async def caption(self, photos, category, keys, language, max_new_tokens):
        text, answer = self.current_caption or ("", None)
        return {"caption": text or "", "answer": answer}

    async def read_caption(self, caption, vector=None, fingerprint=None):
        found = await self.perception.read_caption(caption, vector, fingerprint, self.k * 4)
        hits = [h for h in found["text_hits"] if not any(h.get(f) == v for f, v in self.exclude.items())][: self.k]
        return {**found, "text_hits": hits}

    def sku_colours(self, key: str) -> dict:
        """SKU -> its colour in the served index (what most of its listings state)."""
        with self.perception.holder.lease() as index:
            return index.sku_values(key)

    async def perceive(self, images, category=None, vectors=None, fingerprint=None):
        found = await self._once(("perceive", _digest(images), category, fingerprint),
                                 lambda: self.perception.perceive(images, category, vectors, fingerprint,
                                                                  self.k * 4 if self.exclude else self.k))
        hits = [h for h in found["hits"] if not any(h.get(f) == v for f, v in self.exclude.items())][: self.k]
        self.last_hits = hits
        return {**found, "hits": hits}


def condition_prompt(condition: str, category: Optional[str], template: list[str], reference: Optional[dict],
                     language: str, unknown: Optional[list[str]] = None) -> str:
    use_category, use_reference = "category" in condition, "reference" in condition
    return description_prompt(category if use_category else None, template if use_category else None,
                              reference if use_reference else None, language, unknown)


def row_plans(draft, unguarded, confirmed, conditions, levels, captioned=None) -> dict[str, dict]:
    """Each ablation row's prompt, facts and unknown keys (what the guard blocks and the
    verification checks), from the drafts the graph prepared: the system (abstention, guard,
    verification), the same with all three off (``:unguarded``), and the system after the
    seller confirmed the values it asked for (``confirmed``); with ``captioned`` (the system with
    CASLIE captions) the two caption rows: ``+cqe`` is that draft as it is (kept captions only,
    through the calibrated caption tier), ``+caption`` states every caption's values beside the
    system's facts and always gives the caption as the cue (selection off)."""
    meta, umeta = draft.meta, unguarded.meta
    category, ucat = meta["category"]["name"], umeta["category"]["name"]
    language = draft.language
    facts_all = (draft.check or {}).get("facts", {})
    vocab = (draft.check or {}).get("vocabulary", {})
    leads = (draft.check or {}).get("leads") or {}
    elsewhere = (draft.check or {}).get("elsewhere") or []  # other categories' names (the guard's)
    template = meta["template"] or umeta["template"]
    scored = levels.scored(template)
    ufacts_all = {k: v for k, v in umeta["facts"].items() if k in scored}
    rows: dict[str, dict] = {}
    for cond in conditions:
        facts = facts_all if "reference" in cond else {}
        unknown = [k for k in template if k not in facts]  # as serving: the item's own condition too
        prompt = condition_prompt(cond, category, list(facts), facts or None, language, unknown if category else None)
        rows[cond] = {"prompt": prompt, "facts": facts, "unknown": unknown, "guard": True, "vocabulary": vocab,
                       "leads": leads, "elsewhere": elsewhere}
        ufacts = ufacts_all if "reference" in cond else {}
        rows[f"{cond}:unguarded"] = {"prompt": condition_prompt(cond, ucat, umeta["template"], umeta["facts"] or None,
                                                                language),
                                     "facts": ufacts, "unknown": [k for k in scored if k not in ufacts],
                                     "guard": False, "vocabulary": vocab}
    if captioned is not None and captioned.meta.get("caption") is not None:
        cap = captioned.meta["caption"]
        cc = captioned.check or {"facts": {}, "unknown": [], "vocabulary": vocab}
        rows["image+category+reference+cqe"] = {"prompt": captioned.prompt, "facts": cc["facts"],
                                                "unknown": cc["unknown"], "guard": True,
                                                "vocabulary": cc.get("vocabulary", vocab), "leads": leads,
                                                "elsewhere": elsewhere}
        facts = {**facts_all, **{k: v for k, v in (cap.get("values") or {}).items()
                                 if k in scored and k not in facts_all}}
        unknown = [k for k in template if k not in facts]
        rows["image+category+reference+caption"] = {
            "prompt": description_prompt(category, list(facts), facts or None, language, unknown if category else None,
                                         caption=cap.get("text") or None),
            "facts": facts, "unknown": unknown, "guard": True, "vocabulary": vocab, "leads": leads,
            "elsewhere": elsewhere}
    if confirmed is not None:
        cc = confirmed.check or {"facts": {}, "unknown": [], "vocabulary": {}}
        rows["confirmed"] = {"prompt": confirmed.prompt, "facts": cc["facts"], "unknown": cc["unknown"], "guard": True,
                             "vocabulary": cc["vocabulary"], "leads": cc.get("leads") or {},
                             "elsewhere": cc.get("elsewhere") or []}
    return rows


async def _prepare(pipelines: dict, stages: EvalStages, examples: dict[str, list[dict]], cfg: EvalConfig,
                   levels, captions: Optional[dict] = None) -> list[dict]:
    from ipl.serve.errors import ApiError

    records = []
    total, t0 = sum(len(rows) for rows in examples.values()), time.monotonic()
    for set_name, rows in examples.items():
        for ex in rows:
            if records and len(records) % 50 == 0:
                log.info("retrieval + evidence: %d/%d listings (%.1f/s)", len(records), total,
                         len(records) / max(time.monotonic() - t0, 1e-6))
            stages.start_example(ex.get("exclude"), captions.get(ex["listing_id"]) if captions else None)
            language = ex.get("language") or "en"
            truth = ex["attributes"] or {}
            try:
                stages.last_hits = []
                draft = await pipelines["system"].prepare(DraftRequest(photos=ex["photos"], language=language))
                top = stages.last_hits[0] if stages.last_hits else None
                unguarded = await pipelines["unguarded"].prepare(DraftRequest(photos=ex["photos"], language=language))
                captioned = None
                if "captioned" in pipelines and stages.current_caption is not None:
                    captioned = await pipelines["captioned"].prepare(DraftRequest(photos=ex["photos"],
                                                                                  language=language))
                confirmed = None
                if cfg.confirmed_row:  # the seller answers what the draft asked (the category too, if it had none)
                    category = None if draft.meta["category"]["name"] else ex["category"]
                    asked_keys = draft.meta["to_confirm"] if category is None else pipelines["system"].templates.get(
                        category, [])
                    asked = {k: str(truth[k]) for k in asked_keys if truth.get(k) and levels.level(k) != "listing"}
                    confirmed = await pipelines["system"].prepare(DraftRequest(
                        photos=ex["photos"], language=language, confirmed=asked, category=category)) \
                        if asked or category else draft
            except ApiError as exc:
                log.warning("%s %s: refused by the graph (%s): %s", set_name, ex["listing_id"], exc.code, exc)
                records.append({"set": set_name, "listing_id": ex["listing_id"], "refused": exc.code})
                continue
            meta = draft.meta
            predicted = meta["category"]["candidates"][0]["name"] if meta["category"]["candidates"] else None
            records.append({
                "set": set_name, "listing_id": ex["listing_id"], "sku_id": ex["sku_id"], "spu_id": ex["spu_id"],
                "category": ex["category"], "language": language, "description": ex["description"] or "",
                "attributes": truth, "photos": draft.photos, "category_used": meta["category"]["name"],
                "reference": meta["facts"] or None, "unguarded_reference": unguarded.meta["facts"] or None,
                "statuses": {a["key"]: {"status": a["status"], "value": a["value"], "confidence": a["confidence"],
                                        "basis": a["basis"]} for a in meta["attributes"]},
                "instruction": meta["instruction"], "fallbacks": list(meta["fallbacks"]),
                "references": [r["listing_id"] for r in meta["references"]],
                "retrieval": {"identical_top1": bool(top and top.get("sku_id") == ex["sku_id"]),
                              "similar_top1": bool(top and top.get("spu_id") == ex["spu_id"]),
                              "same_spu_colour_top1": same_spu_colour(top, ex, cfg.metrics.colour_key,
                                                                      stages.sku_colours(cfg.metrics.colour_key)),
                              "same_spu_colour_top1_text": same_spu_colour(top, ex, cfg.metrics.colour_key),
                              "category_top1": predicted == ex["category"]},
                "rows": row_plans(draft, unguarded, confirmed, cfg.conditions, levels, captioned),
                "caption": None if captioned is None else captioned.meta.get("caption"),
            })
    return records


def build_graph(cfg: EvalConfig) -> tuple[EvalStages, dict, object]:
    """The Serve graph's pre-generation classes in this process, and two pipelines over them: the
    system as configured and the unguarded comparison (abstention, guard, verification off)."""
    from ipl.catalog.templates import load_levels, load_templates

    scfg = cfg.serve_config()
    problems = [p for p in scfg.check_artifacts() if not p.startswith("VLM ")]
    if problems:
        raise FileNotFoundError("; ".join(problems))
    stages = EvalStages(scfg)
    templates, levels = load_templates(scfg.templates_path), load_levels(scfg.templates_path)
    off = scfg.evidence.model_copy(update={"abstain": False, "guard": False, "verify": False})
    pipelines = {"system": DraftPipeline(stages, templates, scfg, levels),
                 "unguarded": DraftPipeline(stages, templates, scfg.model_copy(update={"evidence": off}), levels)}
    if cfg.caption_rows:
        on = scfg.caption.model_copy(update={"enabled": True, "skip_uncalibrated": False})  # measured even so
        pipelines["captioned"] = DraftPipeline(stages, templates, scfg.model_copy(update={"caption": on}), levels)
    return stages, pipelines, levels


def offline_captions(cfg: EvalConfig) -> tuple[dict, Optional[str]]:
    """listing_id -> (caption, LLM judge answer) of the index's offline captions, or why there are none."""
    from ipl.caption.stage import read_captions
    from ipl.index.search import resolve_version_dir
    from ipl.runtime import read_json

    scfg = cfg.serve_config()
    folder = scfg.index_root / "captions"
    try:
        manifest = read_json(resolve_version_dir(scfg.index_root) / "manifest.json")
    except FileNotFoundError as exc:
        return {}, str(exc)
    if not manifest.get("caption"):
        return {}, f"the index {scfg.index_root} was built without captions (ipl index caption.enabled=true)"
    key = (manifest.get("captions") or {}).get("key")
    written = read_json(folder / "_captions.json") if (folder / "_captions.json").is_file() else {}
    if key and written.get("key") != key:
        return {}, f"{folder}: captions of another model or prompt than the index was calibrated with (rebuild it)"
    captions = read_captions(folder, with_answers=True)
    return captions, None if captions else f"{folder}: no captions"


def prepare_examples(cfg: EvalConfig, examples: dict[str, list[dict]]) -> list[dict]:
    """Every example through safety, category, retrieval and evidence (one record each)."""
    stages, pipelines, levels = build_graph(cfg)
    captions = None
    if "captioned" in pipelines:
        captions, why = offline_captions(cfg)
        if why:
            log.warning("no caption rows: %s", why)
            pipelines.pop("captioned")
        else:
            missing = sorted({ex["listing_id"] for rows in examples.values() for ex in rows} - set(captions))
            if missing:  # an index captioning another split than this evaluation's (caption.scope)
                log.warning("%d held-out listings have no offline caption (e.g. %s): their caption rows use an "
                            "empty caption (rebuild the index with this instruction split, or caption.scope=all)",
                            len(missing), ", ".join(missing[:3]))
    t = time.monotonic()
    records = asyncio.run(_prepare(pipelines, stages, examples, cfg, levels, captions))
    log.info("retrieval + extraction for %d held-out listings in %.1fs", len(records), time.monotonic() - t)
    return records


# -- generation -------------------------------------------------------------------------------------
def generation_key(model: str, settings: str, language: str, prompt: str, photos: list[bytes],
                   blocked: Optional[list[str]] = None) -> str:
    h = hashlib.sha256(f"{model}|{settings}|{language}|{prompt}|{json.dumps(blocked or [])}".encode())
    for p in photos:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:24]


class VLMWorker:
    """A Ray actor holding the VLM: the Generator deployment's loader and photo sizing."""

    def __init__(self, vlm_dir: str, max_photos: Optional[int] = None, dtype: str = "auto", device: str = "auto",
                 num_gpus: Optional[float] = None, max_model_len: int = 4096):
        import torch

        from ipl.devices import placement_device, resolve_dtype
        from ipl.models.vlm import capped_policy, load_vlm

        device = placement_device(device, num_gpus)  # in the actor: its GPU when it reserved one
        self.vlm = load_vlm(vlm_dir, dtype=getattr(torch, resolve_dtype(dtype, device)), device=device)
        self.images = capped_policy(self.vlm.images, max_photos)  # the model's policy, as the Generator uses it
        self.max_model_len = max_model_len

    def generate(self, items: list[dict], max_new_tokens: int, batch_size: int) -> tuple[list[str], float]:
        from ipl.generate.local import generate_batch
        from ipl.generate.prompts import description_messages
        from ipl.caption.prompts import caption_messages
        from ipl.serve.generator import fit_context, vlm_images

        from ipl.train.collate import limit_images

        requests = []
        for it in items:  # a description prompt, a caption prompt (the caption checks) or ready messages
            images = vlm_images(it["photos"], self.images)
            if it.get("messages") is not None:  # the domain benchmark: an instruction's own prompt
                build = (lambda n, it=it: limit_images(it["messages"], n))
            elif it.get("caption"):
                build = (lambda n, it=it: caption_messages(n, it["prompt"], it["language"]))
            else:
                build = (lambda n, it=it: description_messages(n, it["prompt"], it["language"]))
            requests.append(fit_context(self.vlm.processor.tokenizer, build, images,
                                        self.max_model_len - max_new_tokens))
        t = time.monotonic()
        texts = generate_batch(self.vlm, requests, max_new_tokens, batch_size,
                               blocked=[it.get("blocked") or [] for it in items])
        return texts, time.monotonic() - t


def vlm_actor(cfg: EvalConfig, vlm_dir: Optional[Path] = None):
    """One :class:`VLMWorker` (of ``vlm_dir``, default the served VLM) as a Ray actor with
    ``generation``'s resources (its GPU in production), so no evaluation loads a VLM on the driver."""
    from ipl.runtime import ensure_ray

    ray = ensure_ray(cfg.ray)
    scfg, gc = cfg.serve_config(), cfg.generation
    g = scfg.generate
    return ray.remote(VLMWorker).options(num_cpus=gc.num_cpus, num_gpus=gc.num_gpus).remote(
        str(vlm_dir or scfg.vlm_dir), g.max_photos, g.dtype, "auto", gc.num_gpus, g.max_model_len)


def read_generations(path: Path) -> dict[str, str]:
    """key -> text of ``generations.jsonl``; a torn last line (a killed run) is skipped."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                out[row["key"]] = row["text"]
            except (ValueError, KeyError):
                continue
    return out


def generate_all(cfg: EvalConfig, records: list[dict]) -> dict[str, str]:
    """Generate every (record, row) prompt not generated yet, with the row's blocked values
    when its guard is on; returns key -> text and sets ``record["keys"][row]``."""
    from ipl.extract.matcher import AttributeMatcher
    from ipl.generate.guard import blocked_values
    from ipl.runtime import ensure_ray

    scfg = cfg.serve_config()
    vlm_dir = scfg.vlm_dir
    if not (vlm_dir / "config.json").is_file():
        raise FileNotFoundError(f"VLM {vlm_dir}: no config.json (run `ipl train`, or set serve.models.vlm)")
    g = scfg.generate
    model = model_fingerprint(vlm_dir)
    images = capped_policy(image_policy_of(vlm_dir), g.max_photos)
    settings = f"{cfg.generation.max_new_tokens}:{images.model_dump_json()}:{g.dtype}"
    path = cfg.out_dir / "generations.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if cfg.fresh and path.exists():
        path.unlink()
    done = read_generations(path)
    todo: dict[str, dict] = {}
    matcher = AttributeMatcher(scfg.evidence.synonyms)
    for rec in records:
        if rec.get("refused"):
            continue
        rec["keys"] = {}
        for name, row in rec["rows"].items():
            guard = row["guard"] and scfg.evidence.guard
            blocked = (blocked_values(row["facts"], row["unknown"], row["vocabulary"], matcher,
                                      scfg.evidence.max_blocked, row.get("leads"), row.get("elsewhere", ()))
                       if guard else [])
            key = generation_key(model, settings, rec["language"], row["prompt"], rec["photos"], blocked)
            rec["keys"][name] = key
            if key not in done and key not in todo:
                todo[key] = {"key": key, "prompt": row["prompt"], "language": rec["language"], "photos": rec["photos"],
                             "blocked": blocked}
    n_all = sum(len(r.get("keys", {})) for r in records)
    log.info("generation: %d prompts (%d distinct still to generate; the rest are in %s)", n_all, len(todo), path)
    if not todo:
        return done
    ray = ensure_ray(cfg.ray)
    gc = cfg.generation
    actor = ray.remote(VLMWorker).options(num_cpus=gc.num_cpus, num_gpus=gc.num_gpus)
    workers = [actor.remote(str(vlm_dir), g.max_photos, g.dtype, "auto", gc.num_gpus, g.max_model_len)
               for _ in range(min(gc.workers, len(todo)))]
    items = list(todo.values())
    batches = [items[i: i + gc.batch_size] for i in range(0, len(items), gc.batch_size)]
    pending: dict = {}
    free = list(workers) * 2  # two batches queued per actor keeps it busy
    from ipl.runtime import Progress

    finished, progress = 0, Progress("generated descriptions", len(items), every=10.0)  # a line every 10 s
    with open(path, "a", encoding="utf-8") as out:
        while batches or pending:
            while batches and free:
                w, batch = free.pop(0), batches.pop(0)
                pending[w.generate.remote(batch, gc.max_new_tokens, gc.batch_size)] = (w, batch)
            ready, _ = ray.wait(list(pending), num_returns=1)
            w, batch = pending.pop(ready[0])
            texts, _ = ray.get(ready[0])
            for item, text in zip(batch, texts):
                out.write(json.dumps({"key": item["key"], "text": text}, ensure_ascii=False) + "\n")
                done[item["key"]] = text
            out.flush()
            free.append(w)
            finished += len(batch)
            progress.update(finished, force=finished == len(items))
    for w in workers:
        ray.kill(w)
    return done
