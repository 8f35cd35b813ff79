"""The index stage's evidence pieces: key levels, the photo-colour head, the product heads, the
known values per category and the held-out evidence queries the calibration
(:mod:`ipl.evidence.fit`) runs on. Called by :mod:`ipl.index.stage` inside ``ipl index``; pure
functions over the embeddings Parquet of a build (``load_embeddings``).
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ipl.index.config import IndexConfig
from ipl.index.embed import load_embeddings

log = logging.getLogger("ipl.index")


def key_levels(cfg: IndexConfig):
    from ipl.catalog.levels import KeyLevels
    from ipl.catalog.templates import load_levels

    path = Path(cfg.evidence.templates) if cfg.evidence.templates else cfg.run.dir / "templates.yaml"
    if not path.is_file():
        log.warning("no %s: the evidence uses the default key levels", path)
        return KeyLevels()
    return load_levels(path)


def _attributes(raw) -> dict:
    """A row's extracted attributes, stored as JSON text or a dict ({} when unreadable)."""
    try:
        return json.loads(raw) if isinstance(raw, str) else (raw or {})
    except ValueError:
        return {}


def key_values(extracted: list, key: str) -> list:
    """The value of ``key`` (case-insensitive) in each row's extracted attributes (JSON or dict), or None."""
    return [next((str(v) for k, v in _attributes(raw).items() if str(k).lower() == key.lower() and str(v).strip()),
                 None) for raw in extracted]


def sku_values(sku_ids: list, extracted: list, key: str) -> dict[str, str]:
    """Each SKU's value of ``key``: the one most of its listings state (a SKU is one colour, one
    storage), so a listing whose own text leaves the colour out still has its SKU's. SKUs whose
    listings state none are absent; ties go to the value seen first."""
    from collections import Counter

    from ipl.extract.matcher import value_key

    votes: dict[str, Counter] = {}
    shown: dict[tuple, str] = {}
    for sku, value in zip(sku_ids, key_values(extracted, key)):
        if value is not None and sku is not None:
            votes.setdefault(str(sku), Counter())[value_key(value)] += 1
            shown.setdefault((str(sku), value_key(value)), value)
    return {sku: shown[(sku, c.most_common(1)[0][0])] for sku, c in votes.items()}


def train_colour(cfg: IndexConfig, emb_dir: Path, holdout: set):
    """Fit the photo-colour head on the indexed listings (a Ray task); None when there is nothing to learn."""
    import ray

    from ipl.index.category import train_head
    from ipl.index.colour import ColourPredictor

    key = cfg.evidence.colour_key
    if not key:
        return None
    feats, meta = load_embeddings(emb_dir, holdout, held_out=False, columns=("extracted",), vector="colour")
    labels = key_values(meta["extracted"], key)
    keep = np.array([lab is not None for lab in labels], dtype=bool)
    classes = {lab for lab in labels if lab is not None}
    if keep.sum() < 20 or len(classes) < 2:
        log.warning("no photo-colour head: %d listings state %s in %d values", int(keep.sum()), key, len(classes))
        return None
    c = cfg.category
    head = ray.get(ray.remote(num_cpus=1)(train_head).remote(
        feats[keep], [lab for lab in labels if lab is not None], c.epochs, c.lr, c.weight_decay, seed=cfg.eval.seed))
    head["key"] = key
    log.info("photo-colour head: %d values of %s, train accuracy %.2f", len(head["classes"]), key,
             head["train_accuracy"])
    return head, ColourPredictor(head)


def product_keys(extracted: list, levels) -> list[str]:
    """The product-level keys (``levels``) the rows' extracted attributes name, in first-seen order."""
    seen: dict[str, str] = {}
    for raw in extracted:
        for k in _attributes(raw):
            if levels.level(k) == "product":
                seen.setdefault(str(k).lower(), str(k))
    return list(seen.values())


def _product_job(vecs, meta, queries, query_skus, query_categories, keys, epochs, lr, weight_decay, seed):
    from ipl.index.product import crossfit_predictions, train_heads

    heads = train_heads(vecs, meta["category"], meta["extracted"], keys, epochs, lr, weight_decay, seed)
    photo = crossfit_predictions(vecs, meta, queries, query_skus, query_categories, keys, epochs, lr,
                                 weight_decay, seed)
    return heads, photo


def train_product(cfg: IndexConfig, emb_dir: Path, holdout: set, levels, queries: np.ndarray, query_meta: dict,
                  query_categories: list):
    """The product heads (:mod:`ipl.index.product`) fitted on the indexed listings outside ``holdout``,
    and per held-out query the cross-fitted predictions the calibration reads (a Ray task); None when
    ``evidence.product_heads`` is off or no key has a head."""
    import ray

    from ipl.index.product import MIN_LISTINGS

    if not cfg.evidence.product_heads:
        return None
    vecs, meta = load_embeddings(emb_dir, holdout, held_out=False, columns=("category", "extracted", "sku_id"))
    keys = product_keys(meta["extracted"], levels)
    if not keys or len(vecs) == 0:
        log.warning("no product heads: the indexed listings state no product-level key")
        return None
    c = cfg.category
    heads, photo = ray.get(ray.remote(num_cpus=1)(_product_job).remote(
        vecs, meta, queries, query_meta["sku_id"], query_categories, keys, c.epochs, c.lr, c.weight_decay,
        cfg.eval.seed))
    if not heads:
        log.warning("no product heads: no category has %d+ listings with 2+ values of %s", MIN_LISTINGS,
                    ", ".join(keys))
        return None
    log.info("product heads: %d (%s over %d categories) on %d listings", len(heads), ", ".join(keys),
             len({h["category"] for h in heads}), len(vecs))
    return heads, photo


def vocabulary(emb_dir: Path, holdout: set) -> dict[str, dict[str, list[str]]]:
    """category -> key -> the values the indexed listings state (what the guard and the
    verification know a description could say): the scored keys' and the listing-level ones'
    (the item's condition, battery, ...: a draft states them only when the seller gave them)."""
    _, meta = load_embeddings(emb_dir, holdout, held_out=False, columns=("category", "extracted"))
    out: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for category, raw in zip(meta["category"], meta["extracted"]):
        try:
            attrs = json.loads(raw) if isinstance(raw, str) else (raw or {})
        except ValueError:
            continue
        for key, value in attrs.items():
            if value:
                out[category][key].add(str(value))
    return {c: {k: sorted(v) for k, v in keys.items()} for c, keys in sorted(out.items())}


def guard_words(emb_dir: Path, holdout: set, known: dict, levels, sample: int = 5000
                ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What the guard reads beside the known values, judged on the indexed listings' descriptions
    (read once): the distinctive leading words of the multi-word product values in ``known`` (the
    :func:`vocabulary`; :func:`ipl.extract.matcher.leading_words`, on at most ``sample`` evenly
    spaced descriptions), and per category the other categories' names its sellers rarely write
    (:func:`ipl.extract.matcher.category_words`)."""
    from ipl.extract.matcher import AttributeMatcher, category_words, leading_words

    _, meta = load_embeddings(emb_dir, holdout, held_out=False, columns=("category", "description"))
    texts = [t for t in meta["description"] if t]
    step = max(1, len(texts) // max(1, sample))
    leads = leading_words(known, levels, texts[::step][:sample], AttributeMatcher())
    return leads, category_words(zip(meta["category"], (t or "" for t in meta["description"])))


def hits_with_values(index, vectors: np.ndarray, k: int) -> list[list[dict]]:
    """``index.search`` with each hit's grounded attribute values (``values``), as serving extracts them."""
    from ipl.extract.grounding import grounded_values

    out = index.search(vectors, k)
    for hits in out:
        for h in hits:
            attrs = h.get("attributes") if isinstance(h.get("attributes"), dict) else {}
            h["values"] = grounded_values(attrs, h.get("description") or "", list(attrs), 40)
    return out


def evidence_queries(index, vectors: np.ndarray, meta: dict, predicted: list, k: int,
                     photo: Optional[list] = None) -> list[dict]:
    """Each held-out listing twice: as it is, and with its SKU removed from the hits."""
    out = []
    for i, hits in enumerate(hits_with_values(index, vectors, k * 4)):
        try:
            truth = json.loads(meta["extracted"][i] or "{}")
        except ValueError:
            truth = {}
        base = {"sku_id": meta["sku_id"][i], "category": meta["category"][i], "truth": truth,
                "predicted": predicted[i], "photo": photo[i] if photo else {}}
        out.append({**base, "hits": hits[:k * 2]})
        out.append({**base, "hits": [h for h in hits if h.get("sku_id") != meta["sku_id"][i]][:k * 2]})
    return out
