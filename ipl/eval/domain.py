"""The domain-task benchmark (paper Table 4, Q1): does domain tuning help on our tasks?

The base model (``<run>/models/vlm-base``: before domain tuning) and the fine-tuned one
(``serve.models.vlm``) answer the same held-out prompts; each task is scored by string matching
against its target (paper Appendix E):

* ``category`` -- photos -> category (validation ``category`` instructions: SKUs never trained on):
  the answer names the target category;
* ``text_extraction`` -- listing text -> JSON (validation ``extraction`` instructions): share of the
  target's values the answer's JSON has, per key, case-insensitive;
* ``vision_caption`` -- photos + category -> the visible values (validation ``caption``
  instructions): word-level F1 of the answer against the target caption;
* ``description`` -- photos + category + facts -> description (validation ``desc_reference``
  instructions): share of the reference values the description states (grounding match);
* ``tagging`` -- listing text -> its listing-level facts as tags (validation ``tagging``
  instructions): F1 of the answer's tag set against the target's (both empty: 1);
* ``condition`` -- listing text -> a condition grade (validation ``condition`` instructions): the
  first grade the answer names is the target;
* ``mercari_brand`` -- a real Mercari listing's text -> JSON (``../shared/realdata``, never
  trained on): the answer's Brand equals ``brand_name`` (rows whose brand the text names);
* ``mercari_condition`` -- a real Mercari listing's text -> the grade of its ``item_condition_id``
  (:data:`~ipl.extract.tasks.MERCARI_GRADES`; rows with a description).

The classification tasks (category, the two condition tasks) also report ``majority``: the share
of the commonest target, what always giving one answer would score.

``metrics.json`` ``domain``: ``tasks.<name>.{base, finetuned, n, metric}`` and ``average``.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Optional

log = logging.getLogger("ipl.eval")

TASKS = ("category", "text_extraction", "vision_caption", "description", "tagging", "condition", "mercari_brand",
         "mercari_condition")
METRICS = {"category": "names the target category", "text_extraction": "target values matched",
           "vision_caption": "word F1 against the target caption", "description": "reference values stated",
           "tagging": "tag-set F1", "condition": "grade == target", "mercari_brand": "Brand == brand_name",
           "mercari_condition": "grade == item_condition_id's grade"}
CLASSIFICATION = ("category", "condition", "mercari_condition")
_WORD = re.compile(r"[\u3400-\u9fff]|[^\W_]+", re.UNICODE)


def _norm(s) -> str:
    return " ".join(_WORD.findall(str(s or "").lower().replace("_", " ")))


def category_score(answer: str, target: str) -> float:
    a, t = _norm(answer), _norm(target)
    return 1.0 if t and f" {t} " in f" {a} " else 0.0  # the category as whole words


def extraction_score(answer: str, target: str) -> Optional[float]:
    from ipl.extract.prompt import parse_reply

    try:
        truth = json.loads(target)
    except ValueError:
        return None
    truth = {k: v for k, v in (truth or {}).items() if v not in (None, "")} if isinstance(truth, dict) else {}
    if not truth:
        return None
    got, _ = parse_reply(answer, list(truth))
    return sum(_norm(got.get(k)) == _norm(v) for k, v in truth.items()) / len(truth)


def word_f1(answer: str, target: str) -> float:
    a, t = Counter(_WORD.findall((answer or "").lower())), Counter(_WORD.findall((target or "").lower()))
    common = sum((a & t).values())
    if not common:
        return 0.0
    p, r = common / sum(a.values()), common / sum(t.values())
    return 2 * p * r / (p + r)


def tagging_score(answer: str, target: str) -> float:
    from ipl.extract.tasks import parse_tags

    a, t = {_norm(x) for x in parse_tags(answer)}, {_norm(x) for x in parse_tags(target)}
    if not a and not t:
        return 1.0
    common = len(a & t)
    return 0.0 if not common else 2 * common / (len(a) + len(t))


def condition_score(answer: str, target: str, grades: list[str]) -> float:
    from ipl.extract.tasks import parse_grade

    return float(parse_grade(answer, grades) == target)


def description_score(answer: str, messages: list[dict]) -> Optional[float]:
    from ipl.extract.grounding import is_grounded
    from ipl.train.quality import reference_of

    ref = {k: v for k, v in (reference_of(messages) or {}).items() if v}
    if not ref:
        return None
    return sum(is_grounded(str(v), answer) for v in ref.values()) / len(ref)


def instruction_items(instructions_dir: Path, n: int) -> dict[str, list[dict]]:
    """Up to ``n`` validation instructions per task (prompt messages, photos, target)."""
    import pyarrow.dataset as ds

    wanted = {"category": "category", "extraction": "text_extraction", "caption": "vision_caption",
              "desc_reference": "description", "tagging": "tagging", "condition": "condition"}
    split = Path(instructions_dir) / "split=validation"
    out: dict[str, list[dict]] = {t: [] for t in wanted.values()}
    if not split.exists():
        return out
    table = ds.dataset(split, format="parquet").to_table(columns=["task", "messages", "photos", "target"])
    for task, messages, photos, target in zip(*(table.column(c).to_pylist() for c in
                                                ("task", "messages", "photos", "target"))):
        name = wanted.get(task)
        if name is None or len(out[name]) >= n:
            continue
        msgs = json.loads(messages)
        out[name].append({"task": name, "messages": [m for m in msgs if m["role"] != "assistant"],
                          "photos": list(photos or []), "target": target})
    return out


def mercari_items(root: Path, n: int) -> list[dict]:
    """Up to ``n`` real Mercari listings per task, no photos: those whose text names their brand
    (the Table 3 extraction prompt, ``mercari_brand``) and those with a description (the condition
    prompt, ``mercari_condition``)."""
    import csv

    from ipl.extract.prompt import extraction_messages
    from ipl.extract.tasks import MERCARI_GRADES, condition_messages

    path = Path(root) / "mercari" / "listings.tsv"
    if not path.is_file():
        return []
    grades = list(dict.fromkeys(MERCARI_GRADES.values()))
    brand_items, condition_items = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            brand = (row.get("brand_name") or "").strip()
            desc = (row.get("item_description") or "").strip()
            text = f"{row.get('name') or ''}. {desc}"
            if brand and brand.lower() in text.lower() and len(brand_items) < n:
                category = (row.get("category_name") or "other").split("/")[0] or "other"
                brand_items.append({"task": "mercari_brand", "messages": extraction_messages(category, ["Brand"], text),
                                    "photos": [], "target": json.dumps({"Brand": brand})})
            grade = MERCARI_GRADES.get((row.get("item_condition_id") or "").strip())
            if grade and desc and desc != "No description yet" and len(condition_items) < n:
                condition_items.append({"task": "mercari_condition", "messages": condition_messages(grades, text),
                                        "photos": [], "target": grade, "grades": grades})
            if len(brand_items) >= n and len(condition_items) >= n:
                break
    return brand_items + condition_items


def score_item(item: dict, answer: str) -> Optional[float]:
    t = item["task"]
    if t == "category":
        return category_score(answer, item["target"])
    if t in ("text_extraction", "mercari_brand"):
        return extraction_score(answer, item["target"])
    if t == "vision_caption":
        return word_f1(answer, item["target"])
    if t == "description":
        return description_score(answer, item["messages"])
    if t == "tagging":
        return tagging_score(answer, item["target"])
    if t in ("condition", "mercari_condition"):
        return condition_score(answer, item["target"], item.get("grades") or [item["target"]])
    raise ValueError(f"unknown domain task {t!r}")


def run(cfg) -> dict:
    """Both models on every task's items (Ray actors with the generation resources, never the driver)."""
    import ray

    from ipl.eval.ablation import vlm_actor

    d = cfg.domain
    items = instruction_items(cfg.instructions_dir, d.rows_per_task)
    for it in mercari_items(Path(cfg.realdata.root), d.rows_per_task):
        items.setdefault(it["task"], []).append(it)
    grades = sorted({it["target"] for it in items.get("condition", [])})  # the options the prompts offered
    for it in items.get("condition", []):
        it["grades"] = grades
    items = {t: v for t, v in items.items() if t in d.tasks}
    flat = [it for t in d.tasks for it in items.get(t, [])]
    base = Path(d.base_vlm) if d.base_vlm else cfg.run.dir / "models" / "vlm-base"
    models = {"base": base, "finetuned": cfg.serve_config().vlm_dir}
    missing = {k: str(p) for k, p in models.items() if not (p / "config.json").is_file()}
    if missing:
        return {"skipped": f"no model at {missing} (run `ipl synth` and `ipl train`)"}
    if not flat:
        return {"skipped": f"no validation instructions in {cfg.instructions_dir} and no Mercari listings"}
    from ipl.runtime import Progress

    answers = {}
    chunk = max(1, 4 * cfg.generation.batch_size)  # a progress line per chunk
    # both models' actors start at once and get all their chunks queued: the second loads its model and
    # answers while the first one's answers are read (where the cluster has room for both; else Ray
    # starts it when the first one's resources are free)
    workers = {name: vlm_actor(cfg, path) for name, path in models.items()}
    pending = {name: [w.generate.remote(flat[start:start + chunk], d.max_new_tokens, cfg.generation.batch_size)
                      for start in range(0, len(flat), chunk)] for name, w in workers.items()}
    progress = {name: Progress(f"domain benchmark, {name} model", len(flat), every=10.0) for name in workers}
    try:
        for name, refs in pending.items():
            answers[name] = []
            for i, ref in enumerate(refs):
                got, _ = ray.get(ref)
                answers[name] += got
                progress[name].update(len(answers[name]), force=i == len(refs) - 1)
            ray.kill(workers.pop(name))  # its resources go to the next model's actor if it waits for them
    finally:
        for w in workers.values():  # what a failure left running
            ray.kill(w)
    tasks = {}
    for t in d.tasks:
        idx = [i for i, it in enumerate(flat) if it["task"] == t]
        if not idx:
            tasks[t] = {"skipped": "no items (no validation rows of this task, or no real data)"}
            continue
        row = {"n": len(idx)}
        for name in models:
            scores = [s for s in (score_item(flat[i], answers[name][i]) for i in idx) if s is not None]
            row[name] = round(sum(scores) / len(scores), 4) if scores else None
        row["metric"] = METRICS[t]
        if t in CLASSIFICATION:
            row["majority"] = round(Counter(flat[i]["target"] for i in idx).most_common(1)[0][1] / len(idx), 4)
        row["example"] = {"target": flat[idx[0]]["target"][:200], "base": answers["base"][idx[0]][:200],
                          "finetuned": answers["finetuned"][idx[0]][:200]}
        tasks[t] = row
    scored = [r for r in tasks.values() if r.get("base") is not None and r.get("finetuned") is not None]
    average = {name: round(sum(r[name] for r in scored) / len(scored), 4) if scored else None for name in models}
    log.info("domain benchmark: average base %s, fine-tuned %s over %d tasks", average["base"],
             average["finetuned"], len(scored))
    return {"tasks": tasks, "average": average, "models": {k: str(v) for k, v in models.items()},
            "rows_per_task": d.rows_per_task}


def main(argv: Optional[list] = None) -> int:
    """``python -m ipl.eval.domain [--config jobs/configs/eval_local.yaml] [key=value ...]``: the
    benchmark alone (``ipl eval`` runs it too, into metrics.json ``domain``)."""
    import argparse
    import sys

    from ipl.cli import setup_logging, stage_config
    from ipl.config import ConfigError
    from ipl.eval.report import domain_lines

    ap = argparse.ArgumentParser(prog="python -m ipl.eval.domain", description="the domain-task benchmark (Table 4)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_intermixed_args(argv)
    setup_logging()
    try:
        cfg = stage_config("eval", args.config, args.overrides)
    except ConfigError as exc:
        print(f"ipl domain: {exc}", file=sys.stderr)
        return 2
    out = run(cfg)
    print(json.dumps(out, indent=2, ensure_ascii=False) if args.json else "\n".join(domain_lines(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
