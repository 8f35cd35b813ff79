"""Text cleaning filters (paper Appendix A.1) as a pure batch function.

``TextFilters(cfg)(batch)`` takes a batch (dict of numpy arrays / lists) with at least
``listing_id, category, description`` and adds:

* ``text``: the NFKC-normalised description;
* ``drop_reason`` / ``drop_detail``: the first filter that rejects the row (None = kept):
  ``missing_text``, ``low_quality``, ``risk_flag``, ``risk_text``, ``privacy``, ``too_short``,
  ``too_long``, ``special_chars``;
* ``pii``: the PII kinds found (counted in the summary even when another filter fired);
* ``minhash``: the MinHash signature used by near-duplicate detection (:mod:`ipl.data.dedup`);
* ``error``: the exception text when the row could not be processed (it goes to quarantine).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import Field

from ipl.config import Strict
from ipl.data.contract import require_columns
from ipl.data.dedup import DedupConfig, minhash
from ipl.text.normalize import normalize, special_char_ratio, text_length
from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks

TEXT_REASONS = ("missing_text", "low_quality", "risk_flag", "risk_text", "privacy", "too_short", "too_long",
                "special_chars")


class CleanConfig(Strict):
    """Thresholds of the text filters."""

    min_quality: float = Field(0.5, ge=0, le=1, description="Drop rows whose quality_score is below this.")
    risk_flags: list[str] = Field(
        default_factory=lambda: ["traffic", "low_price", "fraud"],
        description="Platform risk flags (risk_flags column) that drop a row.",
    )
    risk_terms: RiskTerms = Field(default_factory=RiskTerms, description="Risky wording that drops a row.")
    pii_platforms: bool = Field(True, description="Treat other platforms' names as privacy hits.")
    min_length: int = Field(20, ge=0, description="Shortest description kept (CJK characters count twice).")
    max_length: int = Field(1000, ge=1, description="Longest description kept (CJK characters count twice).")
    max_special_ratio: float = Field(0.15, ge=0, le=1, description="Highest share of special characters kept.")
    ignore_markers: list[str] = Field(default_factory=list, description="Literal markers the source inserts (e.g. "
                                      "Mercari's '[rm]' for a removed price) left out of the special-character ratio.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Near-duplicate detection.")


def _without(text: str, markers: list[str]) -> str:
    for m in markers:
        text = text.replace(m, " ")
    return text


class TextFilters:
    """Callable batch stage: annotate each row with its drop reason (the first filter that fires)."""

    def __init__(self, cfg: CleanConfig):
        self.cfg = cfg

    def row(self, description, quality, flags) -> tuple[Optional[str], Optional[str], list[str], str]:
        cfg = self.cfg
        text = normalize(description)
        pii = sorted({h.kind for h in find_pii(text, platforms=cfg.pii_platforms)})
        if not text:
            return "missing_text", None, pii, text
        if quality is not None and not (isinstance(quality, float) and np.isnan(quality)) and float(quality) < cfg.min_quality:
            return "low_quality", f"{float(quality):.2f}", pii, text
        bad_flags = [f for f in (flags if flags is not None else []) if f in cfg.risk_flags]
        if bad_flags:
            return "risk_flag", ",".join(bad_flags), pii, text
        risks = find_risks(text, cfg.risk_terms)
        if risks:
            return "risk_text", ",".join(risks), pii, text
        if pii:
            return "privacy", ",".join(pii), pii, text
        n = text_length(text)
        if n < cfg.min_length:
            return "too_short", str(n), pii, text
        if n > cfg.max_length:
            return "too_long", str(n), pii, text
        ratio = special_char_ratio(_without(text, cfg.ignore_markers))
        if ratio > cfg.max_special_ratio:
            return "special_chars", f"{ratio:.2f}", pii, text
        return None, None, pii, text

    def __call__(self, batch: dict) -> dict:
        require_columns(batch, ["listing_id", "category", "description"], "clean")
        n = len(batch["listing_id"])
        quality = batch.get("quality_score", [None] * n)
        flags = batch.get("risk_flags", [None] * n)
        out = {k: [] for k in ("text", "drop_reason", "drop_detail", "pii", "minhash", "error")}
        for i in range(n):
            try:
                reason, detail, pii, text = self.row(batch["description"][i], quality[i], flags[i])
                sig = minhash(text, self.cfg.dedup) if reason is None else np.zeros(self.cfg.dedup.num_perm, np.uint32)
                err = None
            except Exception as exc:  # the row goes to quarantine with the error
                reason, detail, pii, text, sig = None, None, [], "", np.zeros(self.cfg.dedup.num_perm, np.uint32)
                err = f"{type(exc).__name__}: {exc}"
            out["text"].append(text)
            out["drop_reason"].append(reason)
            out["drop_detail"].append(detail)
            out["pii"].append(pii)
            out["minhash"].append(sig.astype(np.int64))
            out["error"].append(err)
        result = dict(batch)
        if "risk_flags" in batch:  # numpy arrays of str -> plain lists (typed list<string> in Arrow)
            result["risk_flags"] = [[str(f) for f in x] if x is not None and not isinstance(x, float) else []
                                    for x in batch["risk_flags"]]
        for k, v in out.items():
            result[k] = v
        return result
