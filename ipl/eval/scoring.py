"""Scoring the RAG ablation (paper Table 7): each row's drafts as the seller sees them (verified
when the row's guard is on) against the held-out listings' truth and texts, and the retrieval
summary. The records and generations come from :mod:`ipl.eval.ablation`.

:func:`score` reports per held-out set and row: ACC (recall), precision, hallucination, wrong
values, abstained, SIM, BLEU-1..4, ROUGE-1/2/L, the casual register, and what the counts above
miss (:mod:`ipl.eval.match`: the item's own condition, products named by a part of a known
value, the item called by another category's name).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ipl.eval.config import EvalConfig

CAPTION_ROWS = ("image+category+reference+caption", "image+category+reference+cqe")


def run_synonyms(cfg: EvalConfig) -> list[list[str]]:
    """Synonym groups of the run's catalogue (``<run>/raw/_synonyms.json``, written by ``ipl synth``
    with the English/Chinese forms of its values), or ``metrics.synonyms_file``; none when absent."""
    path = Path(cfg.metrics.synonyms_file) if cfg.metrics.synonyms_file else cfg.run.dir / "raw" / "_synonyms.json"
    if not path.is_file():
        return []
    groups = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        raise ValueError(f"{path}: synonyms must be a JSON list of lists of values")
    return groups


def listing_vocabulary(listings_dir: Path) -> dict[str, dict[str, set[str]]]:
    """category -> key -> every ground-truth value of the cleaned listings."""
    import pyarrow.dataset as pds

    from ipl.eval.match import vocabulary_of

    t = pds.dataset(str(listings_dir), format="parquet").to_table(columns=["category", "attributes"])
    pairs = []
    for category, attrs in zip(t.column("category").to_pylist(), t.column("attributes").to_pylist()):
        try:
            pairs.append((category, json.loads(attrs) if isinstance(attrs, str) else (attrs or {})))
        except ValueError:
            continue
    return vocabulary_of(pairs)


def row_names(cfg: EvalConfig) -> list[str]:
    """The ablation rows: the paper's four (full system), the same unguarded, the confirmed row."""
    names = list(cfg.conditions)
    if cfg.unguarded_rows:
        names += [f"{c}:unguarded" for c in cfg.conditions]
    if cfg.caption_rows:
        names += list(CAPTION_ROWS)
    if cfg.confirmed_row:
        names.append("confirmed")
    return names


def final_text(rec: dict, name: str, text: str, matcher, evidence) -> tuple[str, Optional[dict], dict]:
    """What the seller sees for one row: the generation with its repeats taken out (every row, as the
    Serve pipeline does: :mod:`ipl.generate.repetition`), verified (repaired, completed) when the row's
    guard is on; with the verification (or None) and what the repeats' edit did."""
    from ipl.evidence.verify import verify
    from ipl.generate.repetition import clean_repeats

    text, repetition = clean_repeats(text)
    row = rec["rows"][name]
    if not (row["guard"] and evidence.verify):
        return text, None, repetition
    return (*verify(text, row["facts"], row["unknown"], row["vocabulary"], matcher, evidence.add_missing,
                    rec["language"], row.get("leads"), row.get("elsewhere", ())), repetition)


def score(cfg: EvalConfig, records: list[dict], generations: dict[str, str], sim) -> dict:
    """Per set (and ``all``) and row: ACC (recall), precision, hallucination, contradicted values,
    abstained, SIM, BLEU-1..4, ROUGE-1/2/L, casual register; plus each example's outcome."""
    from ipl.catalog.templates import load_levels
    from ipl.eval.match import AttributeMatcher, AttributeScore, category_words, leading_words, listing_facts
    from ipl.eval.match import near_misses, other_category, partial_values
    from ipl.eval.metrics import text_scores
    from ipl.eval.style import Register
    from ipl.extract.matcher import across_categories

    scfg = cfg.serve_config()
    matcher = AttributeMatcher([*cfg.metrics.synonyms, *run_synonyms(cfg)])
    serve_matcher = AttributeMatcher(scfg.evidence.synonyms)
    levels = load_levels(scfg.templates_path)
    register = Register(cfg.style.first_person, cfg.style.marketing)
    vocab = listing_vocabulary(cfg.listings_dir)
    known = {c: across_categories(vocab, c) for c in vocab}  # another category's brand is a wrong brand too
    scored = [r for r in records if not r.get("refused")]
    leads = leading_words(vocab, levels, [r["description"] for r in scored], matcher)
    nouns = category_words((r["category"], r["description"]) for r in scored)  # "watch" for a phone
    names = [n for n in row_names(cfg) if all(n in r["rows"] for r in scored)]
    texts: dict = {}
    for r in scored:
        for n in names:
            texts[(id(r), n)] = final_text(r, n, generations[r["keys"][n]], serve_matcher, scfg.evidence)
    groups = {name: [r for r in scored if r["set"] == name] for name in dict.fromkeys(r["set"] for r in scored)}
    if len(groups) > 1:
        groups["all"] = scored
    # SIM per description once (the "all" group averages the same pairs as the sets)
    sims = {n: dict(zip(map(id, scored), sim.pairwise([texts[(id(r), n)][0] for r in scored],
                                                       [r["description"] for r in scored])))
            for n in names} if sim is not None else None
    table: dict = {}
    examples: dict[str, dict] = {}
    for name, recs in groups.items():
        table[name] = {}
        for n in names:
            hyps = [texts[(id(r), n)][0] for r in recs]
            refs = [r["description"] for r in recs]
            attrs, model_only = AttributeScore(), AttributeScore()
            repaired = completed = repeats_edited = repetition_ended = 0
            own = {"values": 0, "stated": 0, "contradicted": 0, "unsupported": 0, "drafts": 0}
            partial = elsewhere = near = 0
            for r, text in zip(recs, hyps):
                keys = cfg.metrics.keys or levels.scored(list(r["attributes"]))
                mine = listing_facts(matcher, text, r, r["rows"][n]["facts"], levels, known.get(r["category"], {}))
                for k, v in mine.items():
                    own[k] += v
                partial += bool(partial_values(text, r["attributes"], leads, matcher))
                elsewhere += bool(other_category(text, r["category"], nouns))
                near += bool(near_misses(text, r["attributes"], known.get(r["category"], {}), matcher))
                outcome = attrs.add(matcher, text, r["attributes"], keys, known.get(r["category"], {}),
                                    abstained=[k for k in keys if k not in r["rows"][n]["facts"]])
                verification = texts[(id(r), n)][1]
                repaired += bool(verification and verification["repaired"])
                completed += bool(verification and verification["added"])
                repetition = texts[(id(r), n)][2]
                repeats_edited += bool(repetition["removed"] or repetition["collapsed"])  # a loop ended removed one
                repetition_ended += repetition["ended"]
                model_only.add(matcher, generations[r["keys"][n]], r["attributes"], keys, known.get(r["category"], {}))
                if name != "all":
                    ex = examples.setdefault(f"{r['set']}:{r['listing_id']}", {
                        "set": r["set"], "listing_id": r["listing_id"], "category": r["category"],
                        "truth": {k: r["attributes"][k] for k in keys if r["attributes"].get(k)},
                        "facts": r["reference"], "unguarded_reference": r["unguarded_reference"],
                        "attributes": r["statuses"], "references": r["references"],
                        "category_used": r["category_used"], "instruction": r.get("instruction"),
                        "fallbacks": r["fallbacks"], "seller_description": r["description"],
                        "caption": r.get("caption"), "generated": {}})
                    ex["generated"][n] = {"text": text, **outcome,
                                          **({"verification": verification} if verification else {})}
            row = {**attrs.summary(), **text_scores(hyps, refs), "style": register.summary(hyps),
                   "descriptions": len(hyps), "repaired": repaired, "completed": completed,
                   "repeats_edited": repeats_edited, "repetition_ended": repetition_ended,
                   "model_acc": model_only.accuracy, "model_hallucination": model_only.hallucination_rate,
                   "partial_values": partial, "other_category": elsewhere, "near_values": near,
                   "listing_facts": {**{k: v for k, v in own.items() if k != "drafts"},
                                     "drafts_share": own["drafts"] / len(hyps) if hyps else 0.0}}
            if sims is not None:
                row["sim"] = sum(sims[n][id(r)] for r in recs) / len(recs) if recs else 0.0
            table[name][n] = row
    from ipl.eval.captions import caption_summary

    return {"table": table, "examples": list(examples.values()),
            "caption": caption_summary(cfg, scored, known, levels, matcher)}


def same_spu_colour(hit: Optional[dict], ex: dict, key: str, sku_colours: Optional[dict] = None) -> Optional[bool]:
    """The top hit is the query's SPU in the query's colour (None: the query has no colour). The
    hit's colour is its SKU's (``sku_colours``: what most of the SKU's indexed listings state, so a
    hit whose text leaves the colour out counts by the colour it has), else what its text states."""
    from ipl.extract.matcher import value_key

    truth = (ex.get("attributes") or {}).get(key)
    if not truth:
        return None
    theirs = ((sku_colours or {}).get(str((hit or {}).get("sku_id"))) or ((hit or {}).get("attributes") or {}).get(key))
    return bool(hit and hit.get("spu_id") == ex["spu_id"] and theirs and value_key(str(theirs)) == value_key(str(truth)))


def retrieval_summary(records: list[dict]) -> dict:
    """Identical (SKU) / similar (SPU) top-1 of the retrieval path and category top-1, per set,
    with the fallbacks the drafts took."""
    out = {}
    for name in dict.fromkeys(r["set"] for r in records):
        recs = [r for r in records if r["set"] == name and not r.get("refused")]
        n = len(recs)
        if not n:
            continue
        fallbacks: dict[str, int] = {}
        for r in recs:
            for f in r["fallbacks"]:
                fallbacks[f] = fallbacks.get(f, 0) + 1
        row = {"queries": n,
               "similar_top1": sum(r["retrieval"]["similar_top1"] for r in recs) / n,
               "category_top1": sum(r["retrieval"]["category_top1"] for r in recs) / n,
               "with_reference": sum(r["reference"] is not None for r in recs) / n,
               "fallbacks": fallbacks,
               "refused": sum(1 for r in records if r["set"] == name and r.get("refused"))}
        if name != "unseen_sku":  # its own SKU is removed from the hits: identical is impossible by design
            row["identical_top1"] = sum(r["retrieval"]["identical_top1"] for r in recs) / n
            for field in ("same_spu_colour_top1", "same_spu_colour_top1_text"):
                coloured = [c for c in (r["retrieval"].get(field) for r in recs) if c is not None]
                if coloured:
                    row[field] = sum(coloured) / len(coloured)
        out[name] = row
    return out
