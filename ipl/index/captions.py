"""The index stage's caption pieces (CASLIE): offline captions, the text index, the caption
quality evaluation and the ``caption`` evidence tiers, run by ``ipl index`` when
``caption.enabled``.

1. :func:`run_captions`: the domain VLM captions the listings that are read -- the held-out
   queries of the evaluation below and the listings ``ipl eval`` drafts for (``caption.scope``
   ``evaluated``, the default: serving captions an upload itself and reads no offline caption),
   or every listing (``all``) -- with the Ray Data actor pool of :mod:`ipl.caption.stage`; the
   captions, with the LLM judge's yes/no, are kept in ``<index root>/captions/`` across versions
   (resumable; a new VLM or prompt starts over).
2. :func:`build_text_index`: every indexed listing's text (its description) embedded by the
   CLIP's text tower into ``text.faiss`` (exact inner product); row ``i`` is the listing of id
   ``i`` of the image index, so both rankings name the same metadata rows. It is a file of the
   version: published, checksummed and verified with the image shards.
3. :func:`evaluate_captions` on the held-out listings (each searched as it is and with its SKU
   removed, like the rest of the calibration): the CQE vote of each caption (encoder:
   image-caption cosine against a threshold set on the held-out photos and their own texts;
   evidence: the caption's values against the values the hits state; llm: the VLM's yes/no),
   caption quality for every caption and the kept ones, CQE against the oracle, retrieval
   with and without the caption's text ranking fused in (reciprocal rank fusion), and the
   ``caption:product`` / ``caption:sku`` evidence tiers: is a value a caption states right, as a
   function of the share of judges that kept the caption; and the captions' ``gain``
   (:func:`caption_gain`): the right values kept captions state for keys that no retrieval or
   photo basis stated, on which serving decides whether to caption at all (``caption.min_gain``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger("ipl.index")
TEXT_INDEX = "text.faiss"


def vlm_dir_of(cfg) -> Path:
    c = cfg.caption
    return Path(c.vlm) if c.vlm else cfg.run.dir / "models" / "vlm-ft"


def keys_by_category(cfg, levels) -> dict[str, list[str]]:
    """category -> the template keys a caption is asked about (the visible ones)."""
    from ipl.caption.prompts import caption_keys
    from ipl.catalog.templates import load_templates

    path = Path(cfg.evidence.templates) if cfg.evidence.templates else cfg.run.dir / "templates.yaml"
    templates = load_templates(path) if path.is_file() else {}
    return {c: caption_keys(t) for c, t in sorted(templates.items())}


def run_captions(cfg, levels, progress=None, evaluated=None) -> dict:
    """Caption the listings ``caption.scope`` names: ``evaluated`` (the held-out queries and the
    evaluation's listings, passed by the index stage) or all of them."""
    from ipl.caption.stage import caption_listings

    only = None if cfg.caption.scope == "all" or evaluated is None else sorted(evaluated)
    out = caption_listings(cfg.caption, cfg.listings_dir, cfg.index_root / "captions", vlm_dir_of(cfg),
                           keys_by_category(cfg, levels), progress=progress, only=only)
    return {**out, "dir": str(cfg.index_root / "captions"), "scope": cfg.caption.scope}


# -- 2. text index ----------------------------------------------------------------------------------
def build_text_index(clip, staged: Path, batch_size: int = 256) -> dict:
    """``text.faiss`` over the indexed listings' descriptions, in image-index id order."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=["id", "description"]) for f in sorted(staged.glob("shard-*.parquet"))]
    table = pa.concat_tables(tables).sort_by("id")
    ids = table.column("id").to_numpy()
    if len(ids) and not np.array_equal(ids, np.arange(len(ids))):
        raise RuntimeError("text index: the image index ids are not 0..n-1; the rows would not line up")
    texts = [str(t or "") for t in table.column("description").to_pylist()]
    from ipl.runtime import Progress

    progress, parts = Progress("text index: listing descriptions", len(texts), every=10.0), []
    for i in range(0, len(texts), batch_size):
        parts.append(clip.encode_texts(texts[i: i + batch_size], batch_size=batch_size).numpy())
        progress.update(min(i + batch_size, len(texts)))
    vectors = np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros((0, clip.dim)), dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(staged / TEXT_INDEX))
    return {"file": TEXT_INDEX, "ntotal": int(index.ntotal), "dimension": int(vectors.shape[1]),
            "source": "description", "metric": "inner_product"}


def load_text_index(version_dir: Path, manifest: dict):
    """The version's text index (its checksum was verified with the rest of the version), or None."""
    import faiss

    entry = manifest.get("text_index")
    if not entry:
        return None
    path = Path(version_dir) / entry["file"]
    if not path.is_file():
        from ipl.index.manifest import IndexIntegrityError

        raise IndexIntegrityError(f"{version_dir}: the manifest names a text index {entry['file']} that is missing")
    return faiss.read_index(str(path))


def text_search(text_index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.array(vectors, dtype=np.float32, copy=True)  # the caller's vectors stay as they are
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return text_index.search(v, k)


# -- 3. held-out evaluation and calibration ------------------------------------------------------------
def encoder_threshold(image_vectors: np.ndarray, text_vectors: np.ndarray, quantile: float) -> Optional[float]:
    """The ``quantile`` of the cosine between held-out photos and their own listing text: a caption
    less like its photos than most sellers' own words are is not kept by the encoder judge."""
    if not len(image_vectors):
        return None
    a = image_vectors / np.maximum(np.linalg.norm(image_vectors, axis=1, keepdims=True), 1e-12)
    b = text_vectors / np.maximum(np.linalg.norm(text_vectors, axis=1, keepdims=True), 1e-12)
    return float(np.quantile(np.sum(a * b, axis=1), quantile))


def candidates_of(hits: Sequence[dict], keys: Sequence[str], category: Optional[str], k: int, tau: float,
                  alpha: float, top_n: int = 3) -> dict[str, list[str]]:
    """key -> the values the category's top-k hits state, best first (what the evidence judge checks)."""
    from ipl.evidence.assess import scored_values

    same = [h for h in hits if h.get("category") == category][:k]
    return {key: [c["value"] for c in scored_values(same, key, tau, alpha)[:top_n]] for key in keys}


def stated_without_caption(hits: Sequence[dict], keys: Sequence[str], category: Optional[str], levels,
                           evidence: Optional[dict], photo: Optional[dict], k: int) -> set[str]:
    """The keys the other evidence (retrieval, photo classifiers) states for a held-out query, as
    serving would without a caption: the calibrated tiers of ``evidence`` (none: nothing)."""
    from ipl.evidence.assess import assess
    from ipl.evidence.fit import mark_identical

    if not evidence:
        return set()
    same = mark_identical([h for h in hits if h.get("category") == category][:k],
                          (evidence.get("tiers") or {}).get("identical") or {})
    return {a["key"] for a in assess(keys, levels, same, evidence, photo=photo) if a["status"] == "stated"}


def caption_gain(values: Sequence[dict], tiers: dict, queries: int) -> dict:
    """What kept captions add to the other evidence on the held-out queries: values a caption tier
    states for a key no other basis stated (``right`` of them true). Serving skips the VLM call when
    this share of queries is under ``caption.min_gain`` (:mod:`ipl.serve.pipeline`)."""
    from ipl.evidence.assess import tier_for
    from ipl.evidence.calibrate import passes

    new = [v for v in values if v["keep"] and not v["covered"]
           and passes(tier_for(tiers, "caption", v["level"], v["key"]), v["share"])]
    right = sum(v["right"] for v in new)
    return {"queries": queries, "values": len(new), "right": right,
            "precision": round(right / len(new), 4) if new else None,
            "share": round(right / queries, 4) if queries else 0.0}


def evaluate_captions(cfg, clip, index, text_index, vecs: np.ndarray, meta: dict, predicted: list, vocab: dict,
                      levels, evidence: Optional[dict] = None, photo: Optional[list] = None) -> tuple[dict, dict]:
    """(the ``caption`` evaluation, the ``caption:*`` tiers) over the held-out listings; with the
    other bases' calibration (``evidence``) and photo-classifier outputs (``photo``, one per
    held-out listing), also the captions' ``gain`` over that evidence (:func:`caption_gain`)."""
    from ipl.caption.cqe import CaptionCase, EncoderJudge, EvidenceJudge, LLMJudge, caption_values, vote
    from ipl.caption.fusion import reciprocal_rank_fusion
    from ipl.caption.prompts import parse_yes_no
    from ipl.caption.quality import caption_quality
    from ipl.caption.stage import read_captions
    from ipl.evidence.assess import tier_name
    from ipl.evidence.calibrate import fit_tier
    from ipl.extract.matcher import AttributeMatcher, across_categories
    from ipl.index.calibration import hits_with_values

    c, e = cfg.caption, cfg.evidence
    captions = read_captions(cfg.index_root / "captions", with_answers=True)
    ids = [str(i) for i in meta["listing_id"]]
    have = [i for i, lid in enumerate(ids) if lid in captions]
    if not have:
        return {"skipped": "no held-out listing has a caption"}, {}
    caps = [captions[ids[i]][0] or "" for i in have]
    answers = [captions[ids[i]][1] or "" for i in have]
    image_vecs = vecs[have]
    own_text = clip.encode_texts([str(meta["description"][i] or "") for i in have]).numpy()
    threshold = c.cqe.encoder_threshold if c.cqe.encoder_threshold is not None else \
        encoder_threshold(image_vecs, own_text, c.cqe.encoder_quantile)
    cap_vecs = clip.encode_texts([t or " " for t in caps]).numpy()
    by_text = {t: v for t, v in zip(caps, cap_vecs)}
    matcher = AttributeMatcher()
    encoder_judge = EncoderJudge(lambda t: by_text[t], threshold)
    evidence_judge = EvidenceJudge(matcher, c.cqe.min_agreeing)
    k = e.k
    raw_hits = hits_with_values(index, image_vecs, k * 4)
    t_scores, t_ids = text_search(text_index, cap_vecs, k * 4) if text_index is not None else (None, None)
    cases, samples = [], {tier_name("caption", lv): ([], []) for lv in ("product", "sku")}
    merged: dict[str, dict] = {}
    values = []  # every value a caption states, with whether the other evidence already stated its key
    retrieval = {"image": [], "fused": [], "fused_all": [], "identical_image": [], "identical_fused": []}
    for j, i in enumerate(have):
        cat = meta["category"][i]
        try:
            truth = json.loads(meta["extracted"][i] or "{}")
        except ValueError:
            truth = {}
        keys = levels.scored(list(vocab.get(cat, {})))
        if cat not in merged:  # as serving reads it (ipl.index.search.Search.vocabulary)
            merged[cat] = across_categories(vocab, cat)
        cat_vocab = {key: merged[cat].get(key, []) for key in keys}
        hits = raw_hits[j]
        stated = caption_values(caps[j], cat_vocab, matcher)
        for condition in ("as_is", "sku_removed"):
            cond_hits = hits if condition == "as_is" else [h for h in hits if h.get("sku_id") != meta["sku_id"][i]]
            case = CaptionCase(caption=caps[j], category=cat, image_vector=image_vecs[j],
                               candidates=candidates_of(cond_hits, keys, predicted[i][0], k, e.tau, e.alpha),
                               vocabulary=cat_vocab, language="en")
            named = {"encoder": encoder_judge, "evidence": evidence_judge,
                     "llm": LLMJudge(lambda prompt, photos, _a=answers[j]: _a)}
            verdict = vote([named[n] for n in c.cqe.judges], case)
            cases.append({"caption": caps[j], "truth": truth, "vocabulary": cat_vocab, "keep": verdict.keep,
                          "yes": verdict.yes, "condition": condition})
            share = verdict.yes / len(verdict.votes)
            covered = stated_without_caption(cond_hits, keys, predicted[i][0], levels, evidence,
                                             photo[i] if photo else None, k) if stated else set()
            for key, value in stated.items():
                level = levels.level(key)
                if level in ("product", "sku") and truth.get(key):
                    right = matcher.same(value, str(truth[key]))
                    samples[tier_name("caption", level)][0].append(share)
                    samples[tier_name("caption", level)][1].append(right)
                    values.append({"key": key, "level": level, "share": share, "right": right,
                                   "keep": verdict.keep, "covered": key in covered})
            if condition == "as_is" and t_ids is not None:
                image_rank = [h["id"] for h in hits] if hits and "id" in hits[0] else []
                text_rank = [int(x) for x in t_ids[j] if x >= 0]
                fused = [x for x, _ in reciprocal_rank_fusion([image_rank, text_rank], c.fusion_k,
                                                              [1.0, c.text_weight])]
                top_img = hits[0] if hits else None
                top_fused = index.metadata.loc[int(fused[0])].to_dict() if fused else None
                top_used = top_fused if verdict.keep else top_img
                retrieval["image"].append(bool(top_img is not None and top_img.get("spu_id") == meta["spu_id"][i]))
                retrieval["fused"].append(bool(top_used is not None and top_used.get("spu_id") == meta["spu_id"][i]))
                retrieval["fused_all"].append(bool(top_fused is not None and top_fused.get("spu_id") == meta["spu_id"][i]))
                retrieval["identical_image"].append(bool(top_img is not None and top_img.get("sku_id") == meta["sku_id"][i]))
                retrieval["identical_fused"].append(bool(top_used is not None and top_used.get("sku_id") == meta["sku_id"][i]))
    keys_all = sorted({k for cat in vocab for k in levels.scored(list(vocab[cat]))})
    as_is = [x for x in cases if x["condition"] == "as_is"]
    out = {"held_out": len(have), "encoder_threshold": None if threshold is None else round(float(threshold), 4),
           "judges": list(c.cqe.judges), **caption_quality(as_is, keys_all, matcher),
           "llm_answers": {"yes": sum(parse_yes_no(a) is True for a in answers),
                           "no": sum(parse_yes_no(a) is False for a in answers),
                           "neither": sum(parse_yes_no(a) is None for a in answers)}}
    if retrieval["image"]:
        n = len(retrieval["image"])
        out["retrieval"] = {"queries": n, "similar_top1_image": round(sum(retrieval["image"]) / n, 4),
                            "similar_top1_fused": round(sum(retrieval["fused"]) / n, 4),
                            "similar_top1_fused_every_caption": round(sum(retrieval["fused_all"]) / n, 4),
                            "identical_top1_image": round(sum(retrieval["identical_image"]) / n, 4),
                            "identical_top1_fused": round(sum(retrieval["identical_fused"]) / n, 4),
                            "fusion": {"k": c.fusion_k, "text_weight": c.text_weight, "text_source": "description"}}
    tiers = {name: fit_tier(xs, ys, e.level_targets.get(name.split(":", 1)[1], e.target_precision), e.min_support,
                            f"{name} values (share of judges keeping the caption)") for name, (xs, ys) in samples.items()}
    if evidence is not None:
        out["gain"] = caption_gain(values, tiers, len(cases))
    return out, tiers

