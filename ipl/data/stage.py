"""The ``ipl prepare`` stage: run the pipeline and print the summary an operator needs.

``ipl prepare [--config jobs/configs/prepare_local.yaml] [key=value ...]`` or
``ray job submit --working-dir . -- python jobs/prepare_data.py --config ...``.
"""
from __future__ import annotations

from ipl.data.config import PrepareConfig
from ipl.data.pipeline import run_prepare


def report(out: dict) -> str:
    s = out["clean"]
    lines = [f"clean: {s['rows_in']} rows in, {s['kept']} kept, {sum(s['dropped'].values())} dropped, "
             f"{s['quarantined']} quarantined (accounted {s['accounted']}/{s['rows_in']})"]
    lines.append("  dropped by reason: " + (", ".join(f"{k}={v}" for k, v in s["dropped"].items()) or "none"))
    lines.append("  PII hits (all rows): " + (", ".join(f"{k}={v}" for k, v in s["pii_hits"].items()) or "none"))
    check = s["image_text_check"]
    if check["ran"] and check["scores"]:
        q = check["scores"]["quantiles"]
        lines.append(f"  image-text cosine (threshold {check['threshold']}): p1={q['0.01']} p5={q['0.05']} "
                     f"p25={q['0.25']} median={q['0.5']}")
    elif not check["photos"]:
        lines.append("  image-text check: skipped (the input has no photos)")
    ext = s["extraction"]
    if ext["counts"]:
        lines.append(f"  LLM extraction ({ext['llm_backend']}): " + ", ".join(f"{k}={v}" for k, v in ext["counts"].items()))
    for src in s.get("library") or []:
        dropped = src.get("dropped") or {}
        worst = sorted(dropped.items(), key=lambda kv: kv[1]["agreed"] / kv[1]["extracted"])[:5]
        lines.append(f"  {src['key']} values learned from {src['column']}: {src['values']}"
                     + (f", {len(dropped)} dropped (the text's word is rarely this value: "
                        + ", ".join(f"{v} {d['agreed']}/{d['extracted']}" for v, d in worst) + ")" if dropped else ""))
    for key, m in s.get("eval", {}).items():
        lines.append(f"  {key} extraction vs {m['column']}: precision {m['precision']}, recall {m['recall']} "
                     f"({m['rows_value_in_text']} eval rows with the value in the text); precision over every "
                     f"prediction {m.get('precision_all')} ({m['predicted_when_value_not_in_text']} more rows whose "
                     f"{m['column']} is not in the text)")
    tpl = out.get("templates", {})
    for cat in sorted(tpl, key=lambda c: -tpl[c]["listings"])[:8]:
        lines.append(f"template {cat} ({tpl[cat]['listings']} listings): " + " + ".join(tpl[cat]["template"]))
    q = out.get("quality")
    if q:
        low = sorted(((f, v["mean"]) for f, v in q["features"].items() if v["mean"] is not None), key=lambda x: x[1])
        lines.append(f"listing quality (Appendix C.2, operator weights): {q['scored']} listings, mean {q['mean']} "
                     f"(p10 {q['p10']}, p90 {q['p90']}); weakest features: "
                     + ", ".join(f"{f} {v:.2f}" for f, v in low[:3]))
    ins = out.get("instructions")
    if ins:
        lines.append(f"instructions: {ins['split']} by task {ins['task']}"
                     + (f", fallbacks {ins['fallback']}" if ins["fallback"] else ""))
        if "llamafactory" in ins:
            lines.append(f"  LLaMA-Factory export: {ins['llamafactory']['dir']} (dataset_info.json: ipl_train, ipl_validation)")
    return "\n".join(lines)


def main(cfg: PrepareConfig) -> int:
    print(report(run_prepare(cfg)))
    return 0
