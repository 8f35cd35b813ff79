"""The ``caption`` section of ``metrics.json`` (CASLIE, issue 19).

From the held-out records of the ablation (each went through the Serve graph's own classes
with captions on: the listing's offline caption, the CQE vote, the caption's text hits):

* ``all`` / ``kept``: precision and recall of the product-level values the captions state, for
  every caption and for the ones CQE kept (:func:`ipl.caption.quality.caption_quality`, against
  the ground truth of the listing);
* ``cqe``: the vote as a classifier against the oracle (a caption is good when it states no
  wrong value and at least one right one): agreement, precision, recall, kept share; and
  ``judges``: each judge's yes share and its own agreement with the oracle (what one judge alone
  would do);
* ``retrieval``: similar (SPU) and identical (SKU) top-1 of the image hits against the fused
  ranking (reciprocal rank fusion with a kept caption's text hits), per set;
* ``offline``: the index's captioning run (listings captioned, listings/s, seconds) and its
  own held-out caption evaluation (``ipl index``, the one its ``caption:*`` tiers were fitted on).
"""
from __future__ import annotations

from typing import Optional


def index_listings(index_root) -> dict[str, tuple]:
    """listing_id -> (sku_id, spu_id) of the current index version."""
    import pyarrow.parquet as pq

    from ipl.index.search import resolve_version_dir

    out: dict[str, tuple] = {}
    for f in sorted(resolve_version_dir(index_root).glob("shard-*.parquet")):
        t = pq.read_table(f, columns=["listing_id", "sku_id", "spu_id"])
        out.update(zip(t.column("listing_id").to_pylist(), zip(t.column("sku_id").to_pylist(),
                                                                 t.column("spu_id").to_pylist())))
    return out


def caption_summary(cfg, records: list[dict], vocab: dict, levels, matcher) -> Optional[dict]:
    from ipl.caption.quality import caption_quality, judge_caption
    from ipl.index.search import resolve_version_dir
    from ipl.runtime import read_json

    recs = [r for r in records if not r.get("refused") and r.get("caption")]
    if not recs:
        return None
    scfg = cfg.serve_config()
    keys = sorted({k for r in recs for k in levels.scored(list(r["attributes"]))})
    cases = [{"caption": r["caption"]["text"], "truth": r["attributes"], "keep": r["caption"]["keep"],
              "vocabulary": {k: list(v) for k, v in vocab.get(r["category"], {}).items()}} for r in recs]
    out: dict = {"source": f"offline captions of {scfg.index_root / 'captions'} (the run's VLM, the listing's "
                 "category as context)", **caption_quality(cases, keys, matcher)}
    good = [judge_caption(c["caption"], c["truth"], c["vocabulary"], keys, matcher)["good"] for c in cases]
    judges: dict = {}
    for r, ok in zip(recs, good):
        for v in r["caption"]["verdict"]["votes"]:
            j = judges.setdefault(v["judge"], {"yes": 0, "agree": 0, "n": 0})
            j["n"] += 1
            j["yes"] += bool(v["keep"])
            j["agree"] += bool(v["keep"]) == ok
    out["judges"] = {name: {"yes_share": round(j["yes"] / j["n"], 4), "oracle_agreement": round(j["agree"] / j["n"], 4)}
                     for name, j in judges.items()}
    where = index_listings(scfg.index_root)
    retrieval: dict = {}
    for name in dict.fromkeys(r["set"] for r in recs):
        rows = [r for r in recs if r["set"] == name]
        image = [r["retrieval"]["similar_top1"] for r in rows]
        fused, fused_sku = [], []
        for r in rows:
            order = r["caption"].get("fused_references") or []
            if r["caption"]["keep"] and order:
                sku, spu = where.get(order[0], (None, None))
                fused.append(spu == r["spu_id"])
                fused_sku.append(sku == r["sku_id"])
            else:  # not kept (or nothing fused): the image ranking stands
                fused.append(r["retrieval"]["similar_top1"])
                fused_sku.append(r["retrieval"]["identical_top1"])
        n = len(rows)
        row = {"queries": n, "similar_top1_image": round(sum(image) / n, 4), "similar_top1_fused": round(sum(fused) / n, 4),
               "fused_queries": sum(1 for r in rows if r["caption"]["keep"] and r["caption"].get("fused_references"))}
        if name != "unseen_sku":
            row["identical_top1_image"] = round(sum(r["retrieval"]["identical_top1"] for r in rows) / n, 4)
            row["identical_top1_fused"] = round(sum(fused_sku) / n, 4)
        retrieval[name] = row
    out["retrieval"] = retrieval
    try:
        manifest = read_json(resolve_version_dir(scfg.index_root) / "manifest.json")
        out["offline"] = {"captions": manifest.get("captions"), "index_holdout": (manifest.get("eval") or {}).get("caption"),
                          "tiers": {n: {k: t.get(k) for k in ("enabled", "threshold", "precision", "coverage", "n",
                                                              "reason")}
                                    for n, t in ((manifest.get("evidence") or {}).get("tiers") or {}).items()
                                    if n.startswith("caption:")}}
    except FileNotFoundError:
        pass
    return out
