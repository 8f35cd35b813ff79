"""``ipl feedback report [--json]``: do sellers use the drafts? (paper Sec. 5.5)

From the feedback database (:mod:`ipl.feedback.store`) of a run: drafts answered, the share
with feedback, the share published and abandoned, the share of published listings *based on
the draft* (at least ``BASED_ON`` of the generated words reused), the share *keeping more than
half* of the generated content (word multiset overlap, as the paper's "keep more than half of
it"), the distribution of the word-level edit distance between the draft and what was
published (normalised by the longer text), and the attribute keys sellers changed or filled
most. The paper's listing quality score comparison needs the quality score of issue 21 item 5,
which is not built yet: the report says so instead of a number.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
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


def adoption_report(rows: list[dict]) -> dict:
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
        "quality_score": {"skipped": "the listing quality score (issue 21, item 5) is not built yet"},
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
    lines.append(f"quality score: {report['quality_score'].get('skipped')}")
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
    if url.startswith("sqlite:///") and not __import__("pathlib").Path(url[len("sqlite:///"):]).is_file():
        print(f"ipl feedback: no feedback database at {url[len('sqlite:///'):]} (drafts served by `ipl serve` with "
              "feedback.enabled write it)", file=sys.stderr)
        return 2
    store = FeedbackStore(url)
    try:
        report = adoption_report(store.rows())
    finally:
        store.close()
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render(report))
    return 0
