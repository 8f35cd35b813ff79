"""Instruction data in ChatML (paper Appendix A.1, Table 8) from cleaned, extracted listings.

For each kept listing, ``MakeInstructions`` emits one description task, chosen by weight:

* ``desc_image``: photos -> description (also the Appendix D "no category" fallback);
* ``desc_template``: photos + category + template -> description (the "no reference" fallback);
* ``desc_reference``: photos + category + facts -> description. The facts are a part of the
  product- and SKU-level values of *another* listing of the same group (what the evidence
  model states when serving; each kept with ``facts_keep[level]``), the other keys of the
  template are named unknown; without such a listing it falls back to ``desc_template``
  and is counted. A listing-level value (the item's own condition, battery, shutter count) is
  never another listing's: with ``facts_keep["listing"]`` the listing's *own* value is a fact
  (as when the seller confirmed it), otherwise the key is unknown like any other.

With ``caption_cue_prob`` a desc_template/desc_reference prompt also carries the caption of
what the photos show (``<caption>``, as serving passes a kept CASLIE caption); the target is
unchanged, so the model learns that a caption's value is written only when it is a fact.

Training matches serving: the prompt names only facts (unknown template slots are left out
of the "mention" list and named unknown), and the target is the seller's text with every
clause that states a value of an unknown key removed (the verification's own clause
dropping, :func:`ipl.evidence.verify.repair`): the model learns to write what it is told and
to leave out what nobody knows, never to fill a slot. ``desc_template`` (category, no facts)
and ``desc_image`` (photos only) targets drop every value the text states, the condition
included: nothing but the seller can support "battery health 80%", so a draft never makes it up
(the evaluation's ``listing_facts`` counts what drafts still say).

and, each with its probability, the domain-understanding tasks:

* ``category``: photos -> the category name;
* ``extraction``: listing text -> JSON of its grounded attributes (paper Table 3 format);
* ``caption`` (CASLIE's EC³, :mod:`ipl.caption.prompts`): photos + the category and the keys
  the caption is for -> a short caption of what the photos *show*: the category and the values
  of the visible keys (``caption_keys``: colour, logo text, model text). The values come from
  ``caption_truth_column`` (the synthetic ground truth, ``attributes``) and fall back to the
  values extracted from the seller's text; a listing whose photos show another SKU
  (``photo_sku_id`` ≠ the group) yields no caption: the target must be what is visible.
* ``tagging`` (content tagging, :mod:`ipl.extract.tasks`): listing text -> the listing-level values
  (condition, box, accessories: :class:`~ipl.catalog.levels.KeyLevels`) the text states, as tags;
  for categories whose template has listing-level keys;
* ``condition`` (the sentiment-like task): listing text -> the grade in ``condition_column`` (the
  marketplace's condition field; ``ipl synth`` writes one), one of ``condition_grades``; rows whose
  grade is missing or not one of them yield none.

The assistant turn is the training target. Rows are split train/validation by a hash of the
group (SKU), so validation photos are of items never seen in training. Each row's ``draw`` (a
number in [0, 1) from its id) lets ``ipl train data.fraction=f`` train on a nested share of the
rows (the data-size curve: the 10% rows are inside the 20% ones).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field

from ipl.caption.prompts import VISIBLE_KEYS, caption_keys, caption_messages, caption_prompt, caption_target
from ipl.catalog.levels import KeyLevels
from ipl.config import ImagePolicy, Strict
from ipl.data.contract import require_columns
from ipl.evidence.verify import repair
from ipl.extract.matcher import AttributeMatcher
from ipl.extract.prompt import extraction_messages
from ipl.extract.tasks import condition_messages, tagging_messages, tagging_target
from ipl.generate.prompts import description_messages, description_prompt

TASKS = ("desc_image", "desc_template", "desc_reference", "category", "extraction", "caption", "tagging", "condition")


class InstructionConfig(Strict):
    """Which tasks to generate, how often, and the split."""

    desc_weights: dict[str, float] = Field(
        default_factory=lambda: {"desc_image": 0.15, "desc_template": 0.25, "desc_reference": 0.6},
        description="Relative weights of the three description tasks (one per listing).",
    )
    facts_keep: dict[str, float] = Field(
        default_factory=lambda: {"product": 0.8, "sku": 0.5, "listing": 0.3},
        description="Chance each product / SKU-level value of the reference is given as a fact in desc_reference "
        "(the rest are named unknown, as serving abstains on them); `listing`: chance the listing's own value of "
        "a listing-level key (condition, battery, ...) is a fact, as after the seller confirmed it (otherwise the "
        "key is unknown and its value is cut from the target).")
    category_prob: float = Field(0.2, ge=0, le=1, description="Chance a listing also yields a category task.")
    extraction_prob: float = Field(0.2, ge=0, le=1, description="Chance a listing also yields an extraction task.")
    caption_prob: float = Field(0.2, ge=0, le=1, description="Chance a listing also yields a caption task (CASLIE).")
    tagging_prob: float = Field(0.15, ge=0, le=1, description="Chance a listing also yields a content-tagging task.")
    condition_prob: float = Field(0.15, ge=0, le=1, description="Chance a listing with a condition grade also "
                                  "yields a condition task.")
    condition_column: str = Field("condition", description="Column of the listing's condition grade (missing: no "
                                  "condition task).")
    condition_grades: dict[str, list[str]] = Field(
        default_factory=lambda: {"en": ["like new", "good", "fair"], "zh": ["几乎全新", "良好", "一般"]},
        description="The condition grades by language, best first (the answer options).")
    caption_keys: list[str] = Field(default_factory=lambda: list(VISIBLE_KEYS),
                                    description="Keys a photo can show; the caption target states only these.")
    caption_cue_prob: float = Field(0.3, ge=0, le=1, description="Chance a desc_template/desc_reference prompt "
                                    "carries the listing's caption as a <caption> cue (serving gives a kept one); the "
                                    "target still states only the facts.")
    caption_truth_column: str = Field("attributes", description="JSON column of the values the photos show "
                                      "(missing: the values extracted from the text).")
    group_column: str = Field("sku_id", description="Column grouping identical products (references, split).")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Share of groups held out for validation.")
    max_photos: int = Field(2, ge=1, le=9, description="Photos per instruction (images.max_photos when images is set).")
    images: Optional[ImagePolicy] = Field(None, description="The image policy of the model to be trained (the same "
                                          "block as ipl train's `images`): each stored photo is resized by it (JPEG "
                                          "re-encoded), so the instruction data is what training, serving and "
                                          "evaluation give the VLM, and no larger (null: photos as listed).")
    seed: int = Field(0, description="Seed of the task choices.")
    llamafactory_export: bool = Field(True, description="Also write a LLaMA-Factory JSONL export with image files.")


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings."""
    return zlib.crc32("\x1f".join(parts).encode()) / 2**32


def split_of(group: str, fraction: float) -> str:
    return "validation" if unit_hash("split", group) < fraction else "train"


def split_column(instructions, split: str, column: str) -> set[str]:
    """The values of ``column`` in one split of written instruction data
    (``<instructions>/split=<split>``; ``group`` is the SKU a row was split by); empty when there is
    no such split."""
    import pyarrow.dataset as pds

    folder = Path(instructions) / f"split={split}"
    if not folder.is_dir():
        return set()
    return set(pds.dataset(str(folder), format="parquet").to_table(columns=[column]).column(column).to_pylist())


def _choose(weights: dict[str, float], u: float) -> str:
    names = [k for k, w in weights.items() if w > 0]
    cum = np.cumsum([weights[k] for k in names])
    return names[int(np.searchsorted(cum / cum[-1], u, side="right"))] if names else "desc_image"


class MakeInstructions:
    """Callable batch stage: kept listings in, instruction rows out."""

    def __init__(self, cfg: InstructionConfig, templates: dict[str, list[str]], references: dict[str, list],
                 levels: Optional[KeyLevels] = None):
        unknown = set(cfg.desc_weights) - {"desc_image", "desc_template", "desc_reference"}
        if unknown:
            raise ValueError(f"instructions.desc_weights: unknown tasks {sorted(unknown)}")
        self.cfg, self.templates, self.references = cfg, templates, references
        self.levels = levels or KeyLevels()
        self.matcher = AttributeMatcher()
        self.categories = sorted(templates)

    def photos_of(self, photos) -> list:
        """The photos an instruction stores: the first ``max_photos`` as listed, or under the image
        policy each resized by it (:func:`ipl.photos.fit_photos`) and re-encoded as JPEG."""
        if self.cfg.images is None:
            return list(photos)[: self.cfg.max_photos]
        import io

        from ipl.photos import fit_photos

        out = []
        for img in fit_photos(photos, self.cfg.images):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            out.append(buf.getvalue())
        return out

    def facts_for(self, reference: dict, template: list[str], lid: str, own: Optional[dict] = None
                  ) -> tuple[dict, list[str]]:
        """(facts, unknown keys): a part of the reference's scored values and of the listing's ``own``
        listing-level values (as the seller gives them), every other template key unknown."""
        facts = {}
        for key in template:
            level = self.levels.level(key)
            value = ((own or {}) if level == "listing" else reference).get(key)
            if value and unit_hash(str(self.cfg.seed), "fact", lid, key) < self.cfg.facts_keep.get(level, 0.0):
                facts[key] = str(value)
        return facts, [k for k in template if k not in facts]

    def clean_target(self, text: str, attrs: dict, unknown: list[str], facts: Optional[dict] = None) -> str:
        """The seller's text without what states a value of an unknown key (facts beside it stay)."""
        values = [str(attrs[k]) for k in unknown if attrs.get(k)]
        return repair(text, values, self.matcher, (facts or {}).values())[0] if values else text

    def reference_for(self, group: str, listing_id: str) -> Optional[dict]:
        """Extracted attributes of another listing of the same group (deterministic choice)."""
        others = [(lid, attrs) for lid, attrs in self.references.get(group, []) if lid != listing_id and attrs]
        if not others:
            return None
        return others[int(unit_hash("ref", listing_id) * len(others))][1]

    def caption_for(self, cat: str, values: dict, lang: str, template: Optional[list[str]]) -> tuple[str, str]:
        """(prompt, target) of the caption task: the context names the template's visible keys."""
        wanted = {k.lower() for k in self.cfg.caption_keys}
        keys = caption_keys(template or list(values), self.cfg.caption_keys)
        present = {k: v for k, v in values.items() if k.lower() in wanted}
        return caption_prompt(cat, keys, lang), caption_target(cat, present, self.cfg.caption_keys, lang)

    def __call__(self, batch: dict) -> dict:
        cfg = self.cfg
        require_columns(batch, ["listing_id", "category", "text", "photos", "extracted", cfg.group_column],
                        "instructions")
        out = {k: [] for k in ("id", "listing_id", "group", "split", "task", "language", "messages", "photos",
                               "target", "fallback", "draw")}
        n = len(batch["listing_id"])
        languages = batch.get("language", ["en"] * n)
        for i in range(n):
            lid, cat, text = str(batch["listing_id"][i]), str(batch["category"][i]), batch["text"][i]
            group = str(batch[cfg.group_column][i])
            lang = languages[i] or "en"
            photos = self.photos_of(batch["photos"][i])
            attrs = json.loads(batch["extracted"][i])
            template = self.templates.get(cat)
            split = split_of(group, cfg.validation_fraction)

            def emit(task, messages, images, target, fallback=None):
                out["id"].append(f"{lid}:{task}")
                out["listing_id"].append(lid)
                out["group"].append(group)
                out["split"].append(split)
                out["task"].append(task)
                out["language"].append(lang)
                out["messages"].append(json.dumps(messages, ensure_ascii=False))
                out["photos"].append(images)
                out["target"].append(target)
                out["fallback"].append(fallback)
                out["draw"].append(unit_hash("draw", lid, task))  # ipl train's data.fraction keeps draw < fraction

            def mismatched(i: int) -> bool:  # the photos show another SKU than the text: no caption of it
                shown = batch.get("photo_sku_id", [None] * n)[i]
                return bool(shown and cfg.group_column == "sku_id" and str(shown) != group)

            def caption_truth(i: int) -> dict:
                truth = batch.get(cfg.caption_truth_column, [None] * n)[i]
                return json.loads(truth) if truth else attrs

            task = _choose(cfg.desc_weights, unit_hash(str(cfg.seed), "task", lid))
            reference, fallback = None, None
            if task == "desc_reference":
                reference = self.reference_for(group, lid)
                if reference is None:
                    task, fallback = "desc_template", "no_reference"
            if task in ("desc_template", "desc_reference") and not template:
                task, fallback = "desc_image", "no_template"
            if task == "desc_image":
                keys = list(template or attrs)
                prompt = description_prompt(None, None, None, lang)
                target = self.clean_target(text, attrs, keys)
            else:
                facts, unknown = self.facts_for(reference or {}, template, lid, attrs)
                cue = None
                if unit_hash(str(cfg.seed), "cue", lid) < cfg.caption_cue_prob and not mismatched(i):
                    cue = self.caption_for(cat, caption_truth(i), lang, template)[1]
                prompt = description_prompt(cat, list(facts), facts or None, lang, unknown, caption=cue)
                target = self.clean_target(text, attrs, unknown, facts)
            if target.strip():
                emit(task, description_messages(len(photos), prompt, lang, target), photos, target, fallback)
            if unit_hash(str(cfg.seed), "cat", lid) < cfg.category_prob and self.categories:
                q = ("What category is this item? Answer with one of: " if lang != "zh" else "这件商品属于哪个类目？从中选一个：")
                msgs = [{"role": "user", "content": [{"type": "image"}] * len(photos)
                         + [{"type": "text", "text": q + ", ".join(self.categories)}]},
                        {"role": "assistant", "content": cat}]
                emit("category", msgs, photos, cat)
            if attrs and unit_hash(str(cfg.seed), "ext", lid) < cfg.extraction_prob and template:
                keys = list(dict.fromkeys([*template, *attrs]))
                target = json.dumps({k: attrs.get(k) for k in keys}, ensure_ascii=False)
                msgs = extraction_messages(cat, keys, text, lang) + [{"role": "assistant", "content": target}]
                emit("extraction", msgs, [], target)
            if photos and unit_hash(str(cfg.seed), "cap", lid) < cfg.caption_prob and not mismatched(i):
                prompt, target = self.caption_for(cat, caption_truth(i), lang, template)
                emit("caption", caption_messages(len(photos), prompt, lang, target), photos, target)
            listing_keys = [k for k in template or [] if self.levels.level(k) == "listing"]
            if listing_keys and unit_hash(str(cfg.seed), "tag", lid) < cfg.tagging_prob:
                target = tagging_target([str(attrs[k]) for k in listing_keys if attrs.get(k)], lang)
                emit("tagging", tagging_messages(listing_keys, text, lang)
                     + [{"role": "assistant", "content": target}], [], target)
            grade = batch.get(cfg.condition_column, [None] * n)[i]
            grades = cfg.condition_grades.get(lang) or cfg.condition_grades.get("en", [])
            if grade in grades and unit_hash(str(cfg.seed), "cond", lid) < cfg.condition_prob:
                emit("condition", condition_messages(grades, text, lang)
                     + [{"role": "assistant", "content": grade}], [], grade)
        return out
