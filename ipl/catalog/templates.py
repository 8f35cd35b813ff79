"""Category attribute templates: mined from listings, written to an operator-editable YAML.

Mining (paper: the category's key attributes, in the order sellers use): per category, for
every attribute key, the share of listings that state it and its mean rank among the keys a
listing states (0 = mentioned first). Keys stated by at least ``min_rate`` of the listings
form the template, ordered by mean rank. ``templates.yaml`` keeps the numbers beside each
template so an operator can see why, edit ``template:`` and keep the file; the serving side
reads only ``template``.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml
from pydantic import Field

from ipl.catalog.levels import KeyLevels
from ipl.config import Strict


class TemplateConfig(Strict):
    """Template mining thresholds."""

    min_rate: float = Field(0.3, ge=0, le=1, description="Keep keys stated by at least this share of listings.")
    min_listings: int = Field(20, ge=1, description="Categories with fewer listings get no template.")
    max_keys: int = Field(8, ge=1, description="Longest template.")
    levels: KeyLevels = Field(default_factory=KeyLevels, description="Key levels written into templates.yaml "
                              "(which keys retrieved evidence may state: product, sku; the rest are listing-level).")


class TemplateStats:
    """Accumulates mention counts and ranks; mergeable across batches (map then reduce)."""

    def __init__(self):
        self.listings: dict[str, int] = defaultdict(int)
        self.mentions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.rank_sum: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, category: str, meta: dict) -> None:
        """``meta``: ``{key: {"pos": offset, ...}}`` of one listing."""
        self.listings[category] += 1
        order = sorted(meta, key=lambda k: meta[k]["pos"])
        denom = max(1, len(order) - 1)
        for rank, key in enumerate(order):
            self.mentions[category][key] += 1
            self.rank_sum[category][key] += rank / denom

    def merge(self, other: "TemplateStats") -> "TemplateStats":
        for c, n in other.listings.items():
            self.listings[c] += n
            for k, v in other.mentions[c].items():
                self.mentions[c][k] += v
                self.rank_sum[c][k] += other.rank_sum[c][k]
        return self

    def to_dict(self) -> dict:
        return {"listings": dict(self.listings), "mentions": {c: dict(v) for c, v in self.mentions.items()},
                "rank_sum": {c: dict(v) for c, v in self.rank_sum.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "TemplateStats":
        s = cls()
        for c, n in d["listings"].items():
            s.listings[c] = n
            s.mentions[c].update(d["mentions"].get(c, {}))
            s.rank_sum[c].update(d["rank_sum"].get(c, {}))
        return s


def mine_templates(stats: TemplateStats, cfg: TemplateConfig) -> dict:
    """``{category: {"template": [...], "listings": n, "stats": {key: {"rate", "mean_rank"}}}}``."""
    out = {}
    for cat in sorted(stats.listings):
        n = stats.listings[cat]
        if n < cfg.min_listings:
            continue
        keys = {
            k: {"rate": round(m / n, 3), "mean_rank": round(stats.rank_sum[cat][k] / m, 3)}
            for k, m in stats.mentions[cat].items()
        }
        chosen = sorted((k for k, s in keys.items() if s["rate"] >= cfg.min_rate),
                        key=lambda k: (keys[k]["mean_rank"], -keys[k]["rate"]))[: cfg.max_keys]
        out[cat] = {"template": chosen, "listings": n,
                    "stats": dict(sorted(keys.items(), key=lambda kv: kv[1]["mean_rank"]))}
    return out


def write_templates(path: Path, templates: dict, source: str, levels: KeyLevels | None = None) -> None:
    doc = {"version": 1, "source": source,
           "note": "Mined by `ipl prepare`; edit `template` lists and `levels` freely, the serving side reads only "
                   "those.",
           "levels": (levels or KeyLevels()).model_dump(), "categories": templates}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)


def _read(path: str | Path) -> tuple[Path, dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"templates file not found: {p} (run `ipl prepare` to mine it)")
    return p, yaml.safe_load(p.read_text(encoding="utf-8")) or {}


def load_levels(path: str | Path) -> KeyLevels:
    """The key levels of a templates.yaml (the defaults when it predates them); malformed is an error."""
    p, doc = _read(path)
    try:
        return KeyLevels(**(doc.get("levels") or {}))
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
        raise ValueError(f"{p}: levels: {exc}") from None


def load_templates(path: str | Path) -> dict[str, list[str]]:
    """``{category: template}`` from a templates.yaml; a malformed file is a clear error."""
    p, doc = _read(path)
    cats = doc.get("categories")
    if not isinstance(cats, dict):
        raise ValueError(f"{p}: missing the 'categories' mapping")
    out = {}
    for cat, spec in cats.items():
        tpl = spec.get("template") if isinstance(spec, dict) else None
        if not isinstance(tpl, list) or not all(isinstance(k, str) for k in tpl):
            raise ValueError(f"{p}: categories.{cat}.template must be a list of attribute names")
        out[cat] = tpl
    return out

