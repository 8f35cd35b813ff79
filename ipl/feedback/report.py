"""``ipl feedback report [--json]``: do sellers use the drafts? (paper Sec. 5.5)

From the feedback database (:mod:`ipl.feedback.store`) of a run: drafts answered, the share
with feedback, the share published and abandoned, the share of published listings *based on
the draft* (at least ``BASED_ON`` of the generated words reused), the share *keeping more than
half* of the generated content (word multiset overlap, as the paper's "keep more than half of
it"), the distribution of the word-level edit distance between the draft and what was
published (normalised by the longer text), and the attribute keys sellers changed or filled
most, and the listing quality score (:mod:`ipl.data.listing_quality`, the operator weights of
``ipl prepare``) of the listings published from a draft beside the run's cleaned listings
(written without one), both on the features a published text carries (category, attribute
filling, description length and fluency, condition, no contact details: photos and price are
not part of the feedback).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

BASED_ON = 0.2  # share of the generated words reused for a listing to count as based on the draft
_WORDS = re.compile(r"[\u3400-\u9fff]|[^\W_]+", re.UNICODE)


def words(text: Optional[str]) -> list[str]:
    """Lower-cased words (each CJK character one word)."""
    return _WORDS.findall((text or "").lower())


def kept_share(generated: Optional[str], published: Optional[str]) -> float:
    """Share of the generated words that the published text still has (multiset overlap)."""
    g, p = Counter(words(generated)), Counter(words(published))
    total = sum(g.values())
    return sum((g & p).values()) / total if total else 0.0


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance of two word sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def normalised_edit(generated: Optional[str], published: Optional[str]) -> float:
    a, b = words(generated), words(published)
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p):
        return round(v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))], 4)

    return {"n": len(v), "p10": q(0.1), "p25": q(0.25), "p50": q(0.5), "p75": q(0.75), "p90": q(0.9),
            "mean": round(sum(v) / len(v), 4)}


def _same(a, b) -> bool:
    return str(a or "").strip().lower() == str(b or "").strip().lower()


TEXT_FEATURES = {"category_present", "attribute_fill_rate", "description_length", "description_fluency",
                 "condition_stated", "contact_free"}


def quality_comparison(rows: list[dict], run_dir) -> dict:
    """Mean listing quality (text features) of the published drafts vs the run's cleaned listings."""
    from ipl.data.listing_quality import QualityConfig, listing_features, quality_score

    run_dir = Path(run_dir)
    scores_dir, summary_path, tpl_path = run_dir / "quality" / "scores", run_dir / "quality" / "summary.json", \
        run_dir / "templates.yaml"
    if not (scores_dir.exists() and summary_path.is_file() and tpl_path.is_file()):
        return {"skipped": f"no listing quality scores in {run_dir / 'quality'} (run `ipl prepare`)"}
    import pyarrow.dataset as ds

    from ipl.catalog.templates import load_templates

    summary = json.loads(summary_path.read_text())
    qc = QualityConfig(weights=summary["weights"])
    templates = load_templates(tpl_path)
    table = ds.dataset(scores_dir, format="parquet").to_table(columns=sorted(TEXT_FEATURES))
    without = []
    for i in range(table.num_rows):
        s = quality_score({f: table.column(f)[i].as_py() for f in TEXT_FEATURES}, qc.weights, TEXT_FEATURES)
        if s is not None:
            without.append(s)
    with_draft = []
    for r in rows:
        fb = r["feedback"]
        if not fb or fb["outcome"] != "published":
            continue
        values = {a["key"]: a["value"] for a in r["attributes"] or [] if a.get("value")
                  and a.get("status") in ("stated", "confirmed")}
        values.update(fb["confirmed"] or {})
        feats = listing_features({"category": r.get("category"), "description": fb["published_text"],
                                  "extracted": values}, templates.get(str(r.get("category"))), qc)
        s = quality_score(feats, qc.weights, TEXT_FEATURES)
        if s is not None:
            with_draft.append(s)

    def mean(v):
        return round(sum(v) / len(v), 4) if v else None

    m_with, m_without = mean(with_draft), mean(without)
    return {"features": sorted(TEXT_FEATURES), "published_with_draft": {"n": len(with_draft), "mean": m_with},
            "cleaned_without_draft": {"n": len(without), "mean": m_without},
            "relative_gain": round(m_with / m_without - 1, 4) if m_with is not None and m_without else None}


def adoption_report(rows: list[dict], run_dir=None) -> dict:
    """The report's numbers from :meth:`FeedbackStore.rows`."""
    n = len(rows)
    with_fb = [r for r in rows if r["feedback"]]
    published = [r for r in with_fb if r["feedback"]["outcome"] == "published"]
    abandoned = [r for r in with_fb if r["feedback"]["outcome"] == "abandoned"]
    kept = [kept_share(r["description"], r["feedback"]["published_text"]) for r in published]
    edits = [normalised_edit(r["description"], r["feedback"]["published_text"]) for r in published]
    changed: Counter = Counter()
    filled: Counter = Counter()
    for r in published:
        drafted = {a["key"]: a for a in r["attributes"] or []}
        for key, value in (r["feedback"]["confirmed"] or {}).items():
            a = drafted.get(key)
            if a is None or a.get("status") == "to_confirm" or not a.get("value"):
                filled[key] += 1
            elif not _same(a.get("value"), value):
                changed[key] += 1

    def share(k, d):
        return round(k / d, 4) if d else None

    return {
        "drafts": n, "with_feedback": len(with_fb), "feedback_share": share(len(with_fb), n),
        "published": len(published), "published_share": share(len(published), n),
        "published_share_of_feedback": share(len(published), len(with_fb)),
        "abandoned": len(abandoned),
        "based_on_draft_share": share(sum(k >= BASED_ON for k in kept), len(published)),
        "kept_over_half_share": share(sum(k > 0.5 for k in kept), len(published)),
        "kept_share": _quantiles(kept), "edit_distance": _quantiles(edits),
        "most_edited_keys": [{"key": k, "changed": changed[k], "filled": filled[k]}
                             for k, _ in (changed + filled).most_common(10)],
        "thresholds": {"based_on_draft": BASED_ON, "kept_over_half": 0.5},
        "quality_score": quality_comparison(rows, run_dir) if run_dir is not None else
        {"skipped": "no run directory given"},
    }


def render(report: dict) -> str:
    lines = [f"drafts: {report['drafts']} ({report['with_feedback']} with feedback)",
             f"published: {report['published']} (share of drafts {report['published_share']}), abandoned: "
             f"{report['abandoned']}",
             f"published based on the draft (>= {BASED_ON:.0%} of its words kept): {report['based_on_draft_share']}",
             f"published keeping more than half of the draft: {report['kept_over_half_share']}",
             f"edit distance draft -> published (words, normalised): {report['edit_distance']}"]
    if report["most_edited_keys"]:
        lines.append("most edited attributes: " + ", ".join(f"{e['key']} (changed {e['changed']}, filled "
                                                            f"{e['filled']})" for e in report["most_edited_keys"]))
    q = report["quality_score"]
    if "skipped" in q:
        lines.append(f"quality score: {q['skipped']}")
    else:
        lines.append(f"quality score (text features): published with a draft {q['published_with_draft']['mean']} "
                     f"(n={q['published_with_draft']['n']}) vs cleaned listings {q['cleaned_without_draft']['mean']} "
                     f"(n={q['cleaned_without_draft']['n']}): {q['relative_gain']:+.1%}" if q["relative_gain"]
                     is not None else "quality score: no published listing yet")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ipl.config import ConfigError
    from ipl.feedback.store import FeedbackStore, feedback_url
    from ipl.serve.stage import load_serve_config

    ap = argparse.ArgumentParser(prog="ipl feedback", description="adoption feedback of the drafts (paper Sec. 5.5)")
    ap.add_argument("command", choices=["report"])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--config", default=None, help="the Serve config whose run holds the database "
                    "(default: serve_configs/local.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    from ipl.cli import default_config_path

    try:
        cfg = load_serve_config(args.config or default_config_path("serve"), args.overrides)
    except ConfigError as exc:
        print(f"ipl feedback: {exc}", file=sys.stderr)
        return 2
    url = feedback_url(cfg)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        print(f"ipl feedback: no feedback database at {url[len('sqlite:///'):]} (drafts served by `ipl serve` with "
              "feedback.enabled write it)", file=sys.stderr)
        return 2
    store = FeedbackStore(url)
    try:
        report = adoption_report(store.rows(), cfg.run.dir)
    finally:
        store.close()
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render(report))
    return 0
