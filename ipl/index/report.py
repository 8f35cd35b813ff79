"""The text summary `ipl index` prints after a build (its manifest: shards, held-out retrieval and
category figures, product heads, evidence tiers, captions)."""
from __future__ import annotations


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def report(s: dict) -> str:
    ev = s.get("eval", {})
    lines = [f"index {s['version']}{' [reused]' if s.get('reused') else ''}: {s['ntotal']} vectors, dim "
             f"{s['dimension']}, {s['index_type']} ({s['factory']}) in {len(s['shards'])} shards"]
    if s.get("finetune"):
        f = s["finetune"]
        lines.append(f"  encoder fine-tuned: loss {f['loss_first']:.2f} -> {f['loss_last']:.2f} over {f['steps']} "
                     f"steps{' [reused]' if f.get('reused') else ''}")
    untrained = (s.get("build") or {}).get("untrained")
    if untrained:
        lines.append(f"  {untrained} indexed listings of the evaluation's SKUs kept out of the encoder's and the "
                     "heads' training (eval.untrained_split)")
    if ev.get("queries"):
        lines.append(f"  held-out photos ({ev['queries']}): identical (SKU) top-1 {ev['identical_top1']:.2f}, "
                     f"top-5 {ev['identical_top5']:.2f}; similar (SPU) top-1 {ev['similar_top1']:.2f}; same SPU and "
                     f"colour {ev.get('same_spu_colour_top1', float('nan')):.2f} (colour in the hit's text "
                     f"{ev.get('same_spu_colour_top1_text', float('nan')):.2f}); category "
                     f"top-1 {ev.get('category_top1', float('nan')):.2f}"
                     + (f" by heads without the photo's SKU, {ev['category_top1_served_head']:.2f} by the served head"
                        if "category_top1_served_head" in ev else "")
                     + f" (zero-shot {ev.get('category_top1_zero_shot', float('nan')):.2f})")
        th = s.get("thresholds", {})
        if not th.get("calibrated"):
            lines.append(f"  identical-product threshold {th.get('identical'):.3f} (configured)")
        elif th.get("identical") is None:
            lines.append("  identical-product tier DISABLED: no hit is marked identical (set identical_threshold "
                         "to choose one)")
        ph = ev.get("product_heads")
        if ph:
            counts = ", ".join(f"{k} {n}" for k, n in sorted((ph.get("trained") or {}).items()))
            lines.append(f"  product heads: {ph['heads']} ({', '.join(ph['keys'])} per category; listings with the "
                         f"value: {counts}); calibrated on heads fitted without the query's SKU")
        if s.get("evidence"):
            from ipl.evidence.fit import describe

            lines += describe(s["evidence"])
    cap = ev.get("caption") or {}
    if cap.get("all"):
        off = s.get("captions") or {}
        rate = f" ({off['listings_per_s']} listings/s)" if off.get("listings_per_s") is not None else ""
        lines.append(f"  captions: {off.get('captioned', 0)} new, {off.get('reused', 0)} reused{rate}; held-out ({cap['held_out']}): precision all "
                     f"{_f(cap['all']['precision'])} / kept {_f(cap['kept']['precision'])}, CQE agreement with the "
                     f"oracle {_f(cap['cqe']['agreement'])} (kept {cap['cqe']['kept']} of {cap['cqe']['captions']})")
        g = cap.get("gain")
        if g:
            lines.append(f"  captions' gain over the other evidence: {g['right']} right of {g['values']} values no "
                         f"other basis states, on {g['queries']} held-out queries (share {g['share']:.3f})")
        r = cap.get("retrieval")
        if r:
            lines.append(f"  caption fusion: similar (SPU) top-1 image {r['similar_top1_image']:.2f} -> fused "
                         f"{r['similar_top1_fused']:.2f} (every caption fused: {r['similar_top1_fused_every_caption']:.2f})")
    elif cap.get("skipped"):
        lines.append(f"  captions: {cap['skipped']}")
    if ev.get("same_product"):
        sp = ev["same_product"]
        lines.append(f"  same-product photos ({sp['photos']} photos, {sp['products']} products): top-1 "
                     f"{sp['top1_same_product']:.2f}, all first {sp['all_same_product_first']:.2f}")
    return "\n".join(lines)
