"""``<run>/eval/report.md`` with its PNG plots, from the numbers of ``metrics.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

COLUMNS = [("acc", "ACC"), ("precision", "Prec."), ("hallucination", "Halluc."),
           ("abstained", "Abstained"), ("sim", "SIM"), ("bleu1", "BLEU1"), ("bleu2", "BLEU2"),
           ("bleu3", "BLEU3"), ("bleu4", "BLEU4"), ("rouge1", "ROUGE1"), ("rouge2", "ROUGE2"), ("rougeL", "ROUGEL")]
SET_TITLES = {"indexed_sku": "unseen photos of indexed SKUs", "unseen_sku": "unseen SKUs (own SKU removed from "
              "retrieval)", "all": "both sets"}


def _f(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def ablation_table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per condition with ACC, hallucination, SIM, BLEU1-4, ROUGE1/2/L, casual."""
    head = "| row | n | " + " | ".join(t for _, t in COLUMNS) + " | wrong values | casual |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for cond, r in rows.items():
        lines.append(f"| {cond} | {r['descriptions']} | " + " | ".join(_f(r.get(k)) for k, _ in COLUMNS)
                     + f" | {r.get('contradicted_values', 0)} | {_f(r['style']['casual'])} |")
    return "\n".join(lines)


def plot_ablation(table: dict[str, dict[str, dict]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    sets = list(table)
    conds = list(next(iter(table.values())))
    for metric, title in (("acc", "Attribute accuracy (ACC, recall)"), ("precision", "Precision of stated values"),
                          ("hallucination", "Hallucination rate (descriptions with a wrong value)"),
                          ("abstained", "True values left to the seller"), ("sim", "Semantic similarity (SIM)")):
        fig, ax = plt.subplots(figsize=(9, 3.8))
        width = 0.8 / len(sets)
        for i, s in enumerate(sets):
            vals = [table[s][c].get(metric) or 0.0 for c in conds]
            ax.bar([j + i * width for j in range(len(conds))], vals, width, label=SET_TITLES.get(s, s))
        ax.set_xticks([j + width * (len(sets) - 1) / 2 for j in range(len(conds))],
                      [c.replace("image+", "i+").replace("category", "cat").replace("reference", "ref")
                       .replace(":unguarded", "\n(unguarded)") for c in conds], fontsize=7)
        ax.set_ylim(0, 1.2)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left", ncol=len(sets))
        fig.tight_layout()
        name = f"ablation_{metric}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    overall = table.get("all") or next(iter(table.values()))
    keys = [k for k, _ in COLUMNS if k.startswith(("bleu", "rouge"))]
    width = 0.8 / len(conds)
    for i, c in enumerate(conds):
        ax.bar([j + i * width for j in range(len(keys))], [overall[c][k] for k in keys], width, label=c)
    ax.set_xticks([j + width * (len(conds) - 1) / 2 for j in range(len(keys))], [k.upper() for k in keys], fontsize=8)
    ax.set_title("BLEU / ROUGE by condition")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ablation_text.png", dpi=110)
    plt.close(fig)
    return files + ["ablation_text.png"]


def render(result: dict, plots: list[str]) -> str:
    lines = [f"# IPL evaluation: run `{result['run']}`", "",
             f"Model `{result['model']['vlm']}` (fingerprint {result['model']['fingerprint']}), index version "
             f"`{result['model'].get('index_version')}`, SIM model `{result['model'].get('sim_model')}`. "
             f"Reproduce: `{result['command']}`. Every number is also in `metrics.json`; every generated "
             "description with its outcome in `examples.jsonl`.", ""]
    ab = result.get("ablation") or {}
    if ab.get("table"):
        lines += ["## RAG ablation (paper Table 7)", "",
                  "Same model and the same retrieval/evidence per listing; the paper's four rows differ only in "
                  "what the prompt is given, with the full system (calibrated abstention, decode-time guard, "
                  "verification); `:unguarded` rows are the same with all three off (every best retrieved value "
                  "stated as fact); `confirmed` is the full system after the seller confirmed the values it asked "
                  "for with the true ones. ACC: share of the true key attribute values (product and SKU level) the "
                  "description states (recall); Prec.: of the values of those keys the description states, the "
                  "share that is true; Halluc.: share of descriptions stating at least one value that contradicts "
                  "the truth; wrong values: how many such values in all; Abstained: share of true values the draft "
                  "left to the seller; casual: share in the seller's register. BLEU is corpus-level (sacrebleu), "
                  "ROUGE is the mean F-measure, both against the listing's own seller-written description.", ""]
        for name, rows in ab["table"].items():
            lines += [f"### {SET_TITLES.get(name, name)}", "", ablation_table(rows), ""]
        for name, why in (ab.get("skipped") or {}).items():
            lines.append(f"- set `{name}` skipped: {why}")
        lines += [f"![{p}]({p})" for p in plots] + [""]
        lines += finding(ab["table"])
        lines += listing_facts_lines(ab["table"])
        lines += partial_value_lines(ab["table"])
    if result.get("retrieval"):
        lines += ["## Retrieval and category (the Serve graph's path, on the same held-out listings)", "",
                  "The hit's colour is its SKU's (what most of the SKU's indexed listings state); the column after "
                  "counts only a colour the hit's own text states.", "",
                  "| set | queries | identical (SKU) top-1 | same SPU and colour top-1 | the same, colour in the hit's "
                  "text | similar (SPU) top-1 | category top-1 | with reference | fallbacks |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in result["retrieval"].items():
            fb = ", ".join(f"{k} {v}" for k, v in sorted(r["fallbacks"].items())) or "none"
            lines.append(f"| {SET_TITLES.get(name, name)} | {r['queries']} | {_f(r.get('identical_top1'))} | "
                         f"{_f(r.get('same_spu_colour_top1'))} | {_f(r.get('same_spu_colour_top1_text'))} | {_f(r['similar_top1'])} | {_f(r['category_top1'])} | {_f(r['with_reference'])} | {fb} |")
        lines.append("")
    if result.get("caption"):
        lines += caption_lines(result["caption"])
    rd = result.get("realdata")
    if rd:
        lines += realdata_lines(rd)
    if result.get("domain"):
        lines += domain_lines(result["domain"])
    return "\n".join(lines).rstrip() + "\n"


def domain_lines(d: dict) -> list[str]:
    """The domain-task benchmark (paper Table 4): base vs fine-tuned per task."""
    lines = ["", "## Domain tasks (paper Table 4): before and after domain tuning", ""]
    if "skipped" in d:
        return lines + [f"Skipped: {d['skipped']}", ""]
    lines += [f"Base `{d['models']['base']}` against fine-tuned `{d['models']['finetuned']}`, up to "
              f"{d['rows_per_task']} held-out prompts per task, scored by string matching against the target.", "",
              "| task | n | base | fine-tuned | majority answer | score |", "|---|---|---|---|---|---|"]
    for name, r in d["tasks"].items():
        if "skipped" in r:
            lines.append(f"| {name} | 0 | — | — | — | skipped: {r['skipped']} |")
        else:
            lines.append(f"| {name} | {r['n']} | {_f(r['base'])} | {_f(r['finetuned'])} | "
                         f"{_f(r['majority']) if 'majority' in r else '—'} | {r['metric']} |")
    a = d["average"]
    lines += [f"| **average** | | **{_f(a['base'])}** | **{_f(a['finetuned'])}** | | |", "",
              "*majority answer*: the share of the commonest target (classification tasks), what one fixed answer "
              "would score.", ""]
    return lines


def caption_lines(c: dict) -> list[str]:
    """The CASLIE section: caption quality (all vs kept), CQE against the oracle, each judge, fusion."""
    lines = ["## Captions (CASLIE): quality, the CQE vote, fused retrieval", ""]
    if c.get("skipped"):
        return lines + [f"Skipped: {c['skipped']}", ""]
    lines += [f"Source: {c.get('source')}. A value a caption states is scored against the listing's ground truth "
              f"(keys {', '.join(c.get('keys', []))}); a caption is *good* (the oracle) when it states no wrong value "
              "and at least one right one. The `+caption` / `+cqe` rows of the ablation above use every caption / the "
              "kept ones.", "",
              "| captions | count | values stated | precision | recall | good |", "|---|---|---|---|---|---|"]
    for name in ("all", "kept"):
        t = c.get(name) or {}
        lines.append(f"| {name} | {t.get('captions')} | {t.get('values_stated')} | {_f(t.get('precision'))} | "
                     f"{_f(t.get('recall'))} | {t.get('good')} |")
    q = c.get("cqe") or {}
    lines += ["", f"CQE vs the oracle: agreement {_f(q.get('agreement'))}, precision {_f(q.get('precision'))}, recall "
              f"{_f(q.get('recall'))}; kept {q.get('kept')} of {q.get('captions')} ({_f(q.get('kept_share'))}), "
              f"{q.get('oracle_good')} good.", "",
              "| judge | says yes | agrees with the oracle alone |", "|---|---|---|"]
    for name, j in (c.get("judges") or {}).items():
        lines.append(f"| {name} | {_f(j['yes_share'])} | {_f(j['oracle_agreement'])} |")
    if c.get("retrieval"):
        lines += ["", "| set | queries | similar top-1 image | similar top-1 fused | identical top-1 image | "
                  "identical top-1 fused | fused queries |", "|---|---|---|---|---|---|---|"]
        for name, r in c["retrieval"].items():
            lines.append(f"| {SET_TITLES.get(name, name)} | {r['queries']} | {_f(r['similar_top1_image'])} | "
                         f"{_f(r['similar_top1_fused'])} | {_f(r.get('identical_top1_image'))} | "
                         f"{_f(r.get('identical_top1_fused'))} | {r['fused_queries']} |")
    off = (c.get("offline") or {}).get("captions") or {}
    if off:
        lines += ["", f"Offline captioning (ipl index): {off.get('captioned')} captioned, {off.get('reused')} reused, "
                  f"{off.get('listings_per_s')} listings/s, {off.get('seconds')} s."]
    return lines + [""]


def listing_facts_lines(table: dict) -> list[str]:
    """The listing's own condition (listing-level keys) that the drafts state without the seller:
    no evidence can support it, and the scored ACC and wrong values above do not count it."""
    rows = table.get("all") or next(iter(table.values()))
    rows = {n: r["listing_facts"] for n, r in rows.items() if r.get("listing_facts")}
    if not rows:
        return []
    out = ["### What the drafts say about the item's own condition (not scored above)", "",
           "Listing-level keys (Condition, Battery, Shutter count, ...) are the seller's to state: no photo or "
           "retrieved listing supports them, and the system never gives them as facts. Made up: values of those "
           "keys a draft states (true or not) that the row was not given; wrong: other known values of them.", "",
           "| row | drafts with a made-up condition | made-up values | wrong values | true values stated / all |",
           "|---|---|---|---|---|"]
    for n, f in rows.items():
        out.append(f"| {n} | {f['drafts_share']:.2f} | {f['unsupported']} | {f['contradicted']} | "
                   f"{f['stated']} / {f['values']} |")
    return out + [""]


def partial_value_lines(table: dict) -> list[str]:
    """Drafts naming a product by a part of a known value, which the wrong values above miss."""
    rows = table.get("all") or next(iter(table.values()))
    rows = {n: r for n, r in rows.items() if "partial_values" in r}
    if not rows:
        return []
    out = ["### Drafts naming a product by a part of a known value, by a near model number, or the item by "
           "another category's name (not counted above)", "",
           "The wrong values above count whole known values: a draft can still write the distinctive first word "
           "of a multi-word brand or model that is not the item's ('iPhone' of 'iPhone 12 Pro' for a watch, "
           "'Michael' of 'Michael Kors', going on into 'Michael Vuitton'), or call a phone a 'watch' (another "
           "category's name that this category's sellers rarely write), or write a model number one character "
           "off a known one ('WH-1000XM3' for a WH-1000XM4: another product).", "",
           "| row | part of a value | another category's name | a near model number |", "|---|---|---|---|"]
    out += [f"| {n} | {r['partial_values']} of {r['descriptions']} | {r.get('other_category', '—')} of "
            f"{r['descriptions']} | {r.get('near_values', '—')} of {r['descriptions']} |" for n, r in rows.items()]
    return out + [""]


def finding(table: dict) -> list[str]:
    rows = table.get("all") or next(iter(table.values()))
    out = ["### Against the paper's finding", ""]
    if "image" in rows and "image+category+reference" in rows:
        a0, a1 = rows["image"]["acc"], rows["image+category+reference"]["acc"]
        ratio = f"{a1 / a0:.2f}x" if a0 else "n/a (image-only ACC is 0)"
        out.append(f"- Paper: reference information roughly doubles ACC (0.36 -> 0.74). Here: image {a0:.3f} -> "
                   f"image+category+reference {a1:.3f} ({ratio}).")
    if "image" in rows and "image+category" in rows:
        out.append(f"- Paper: category alone changes little. Here: image {rows['image']['acc']:.3f} -> image+category "
                   f"{rows['image+category']['acc']:.3f}.")
    full, off = rows.get("image+category+reference"), rows.get("image+category+reference:unguarded")
    if full and off:
        out.append(f"- Trust: with calibrated abstention, the guard and verification, precision "
                   f"{_f(full.get('precision'))} and "
                   f"hallucination {full['hallucination']:.3f} ({full.get('contradicted_values', 0)} wrong values); "
                   f"unguarded, precision {_f(off.get('precision'))} and hallucination {off['hallucination']:.3f} "
                   f"({off.get('contradicted_values', 0)} wrong values).")
    if rows.get("confirmed"):
        c = rows["confirmed"]
        out.append(f"- After the seller confirms what the draft asked: ACC {c['acc']:.3f}, hallucination "
                   f"{c['hallucination']:.3f} (the model's own text: ACC {c.get('model_acc', c['acc']):.3f}).")
    return out + [""]


def fashion_lines(f: dict, whose: str) -> list[str]:
    lines = []
    for what in ("category", "colour"):
        z = f.get(what)
        if not z:
            continue
        knn = f"; leave-one-out nearest neighbour {_f(z.get('knn_top1'))}" if "knn_top1" in z else ""
        if "knn_top1_colour_features" in z:
            knn += f" (colour features {_f(z['knn_top1_colour_features'])})"
        head = ""
        if z.get("method", "zero-shot") != "zero-shot":
            head = f"; {z['method']} top-1 {_f(z['top1'])} ({_f(z.get('labels_named'))} of the labels are colours it names)"
            st = z.get("stated")
            if st:
                head += (f", stated at its calibrated threshold for {_f(st['coverage'])} of the photos with precision "
                         f"{_f(st['precision'])}")
        lines.append(f"- Fashion {what} ({whose}, {z['photos']} photos, {z['classes']} classes): zero-shot top-1 "
                     f"{_f(z.get('zero_shot_top1', z['top1']))}{knn}{head}; always answering the commonest class: "
                     f"{_f(z['majority_baseline'])}.")
    return lines


def realdata_lines(rd: dict) -> list[str]:
    lines = ["## Real data (`../shared/realdata`, never trained on)", ""]
    if rd.get("skipped"):
        return lines + [f"Skipped: {rd['skipped']}", ""]
    m = rd.get("mercari") or {}
    if m.get("skipped"):
        lines.append(f"- Mercari brand extraction: skipped ({m['skipped']})")
    else:
        for key, e in (m.get("extraction") or {}).items():
            lines.append(f"- Mercari {key} extraction vs `{e['column']}` on {e['eval_rows']} listings whose brands "
                         f"were not learned from ({e['rows_with_ground_truth']} with a brand, {e['rows_value_in_text']}"
                         f" naming it in their text): precision {_f(e['precision'])}, recall {_f(e['recall'])}; "
                         f"over every prediction on a listing with a brand (also the "
                         f"{e.get('predicted_when_value_not_in_text', 0)} whose brand is not in their text) "
                         f"precision {_f(e.get('precision_all'))} (`{m['command']}`).")
    f = rd.get("fashion") or {}
    if f.get("skipped"):
        lines.append(f"- Fashion photos: skipped ({f['skipped']})")
    elif f:
        lines += fashion_lines(f, "the run's CLIP")
    for name, c in (rd.get("compare") or {}).items():
        if c.get("skipped"):
            lines.append(f"- For comparison, the {name} CLIP: skipped ({c['skipped']})")
            continue
        lines += fashion_lines(c.get("fashion") or {}, f"for comparison, {name} CLIP `{c['clip']}`")
        a = c.get("abo") or {}
        if a.get("photos"):
            lines.append(f"- ABO same-product top-1 with the {name} CLIP: {_f(a['top1_same_product'])}.")
    d = rd.get("fashion_descriptions") or {}
    if d and not d.get("skipped"):
        lines.append(f"- Fashion photos described by the VLM (image only, {d['photos']} photos): the true brand "
                     f"stated in {_f(d['brand_stated'])}, the true colour in {_f(d['colour_stated'])}; repeats "
                     f"taken out of {_f(d.get('repeats_edited', 0))}, a loop ended {_f(d.get('repetition_ended', 0))}. "
                     f"Example ({d['example']['truth']}): \"{d['example']['generated']}\"")
    fc = rd.get("fashion_captions") or {}
    if fc and not fc.get("skipped"):
        col = fc["colour"]
        lines.append(f"- Fashion photos captioned by the VLM (CASLIE caption prompt, {fc['photos']} photos): the article "
                     f"type named in {_f(fc['article_type_named'])}; a colour stated for {col['stated']}, right "
                     f"{col['correct']} (precision {_f(col['precision'])}, recall {_f(col['recall'])}; always the "
                     f"commonest colour: {_f(col.get('majority_baseline'))}). Example "
                     f"({fc['example']['truth']}): \"{fc['example']['caption']}\"")
    a = rd.get("abo") or {}
    if a and not a.get("skipped"):
        lines.append(f"- ABO same-product retrieval ({a['photos']} photos of {a['products']} products): a photo of the "
                     f"same product ranked first for {_f(a['top1_same_product'])}; all of them first for "
                     f"{_f(a['all_same_product_first'])}.")
    o = rd.get("ood") or {}
    if o and not o.get("skipped"):
        lines.append(f"- Real photos far from the index (fashion + ABO, {o['photos']} photos, through the Serve "
                     f"graph's evidence): no brand or model stated as a fact in {_f(o['no_product_fact'])} of the "
                     f"drafts (goal >= 0.95); out of domain by the calibrated floor {_f(o['out_of_domain'])}; a "
                     f"category used in {_f(o['with_category'])}.")
    sf = rd.get("safety") or {}
    if sf and not sf.get("skipped"):
        lines.append(f"- Photo-safety screen (Open-NSFW, threshold {sf['threshold']:g}) over {sf['photos']} real "
                     f"photos, none explicit: {sf['false_positives']} false positives (highest score "
                     f"{sf['max_score']:.3f}, 95th percentile {sf['p95_score']:.3f}).")
    lines += ["", "The demo's CLIP and VLM are tiny models trained on synthetic drawings of a small catalogue: on "
              "real photos they are not expected to beat the baselines above, and a real checkpoint "
              "(`serve.models.*` pointing at a fine-tuned 7B and a pretrained CLIP) is what these rows are for. The "
              "Mercari row measures the text pipeline (gazetteer/LLM extraction), which does not depend on them.", ""]
    return lines
