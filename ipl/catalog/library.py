"""The attribute library: per category, the candidate attribute keys and their known values.

It is what the extraction schema and the gazetteer are built from, and the key universe
template mining orders. Sources (combinable, see :class:`LibraryConfig`):

* ``catalogue``: a product catalogue YAML (the synthetic marketplace's, standing in for a
  platform's SPU library): keys from each category's template, values from its brands,
  models, colours and variant/listing values;
* ``column``: known values of one key learned from a structured column of the listings
  themselves (e.g. Mercari's ``brand_name``), kept when seen ``min_count`` times and, with
  ``min_precision``, when the gazetteer's extraction of the value from those same listings'
  texts agrees with their column at least that often (a brand that is also a common word,
  such as PINK, Vintage or Express, is mostly the word, not the brand);
* ``builtin``: generic patterns any category can use: Color (a colour word list),
  Storage (``64GB``, ``1TB``), Size (``size M``, ``EU 42``, ``US 9.5``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional

from pydantic import Field

from ipl.config import Strict

GENERIC = "*"  # the pseudo-category whose keys/values apply to every category

COLORS = [
    "black", "white", "blue", "red", "silver", "gold", "green", "pink", "grey", "gray", "purple", "brown", "beige",
    "navy", "orange", "yellow", "rose gold", "space gray", "cream", "ivory", "tan", "khaki", "burgundy", "maroon",
    "teal", "turquoise", "coral", "lavender", "olive", "charcoal", "multicolor",
    "黑色", "白色", "蓝色", "红色", "银色", "金色", "绿色", "粉色", "灰色", "紫色", "棕色", "米色", "藏青色", "橙色", "黄色",
]
PATTERNS = {
    "Storage": r"(?<![\w.])\d{2,4} ?(?:gb|tb|g|t)(?![\w])",
    "Size": r"(?:(?<![\w])(?:size|sz|尺码)[ :：]*(?:xxs|xs|s|m|l|xl|xxl|xxxl|\d{1,2}(?:\.5)?)(?![\w.])"
    r"|(?<![\w])(?:eu|us|uk) ?\d{1,2}(?:\.5)?(?![\w.])|(?<![\w])\d{2}码)",
}


class LibrarySource(Strict):
    """One source of attribute keys/values."""

    type: Literal["catalogue", "column", "builtin"] = Field(..., description="Kind of source.")
    path: Optional[str] = Field(None, description="catalogue: YAML path (null: the shipped synthetic catalogue).")
    column: Optional[str] = Field(None, description="column: the listings column holding the values.")
    key: Optional[str] = Field(None, description="column: the attribute key the values belong to (e.g. Brand).")
    min_count: int = Field(2, ge=1, description="column: keep values seen at least this often.")
    per_category: bool = Field(True, description="column: learn values per category (else for every category).")
    min_precision: float = Field(0.0, ge=0, le=1, description="column: drop a learned value when the gazetteer, "
                                 "extracting it from the texts of the rows it is learned from (those with a value in "
                                 "the column; judged on 3 or more extractions), agrees with their column less often "
                                 "than this (0: keep every value). Needs the rows' text.")


class LibraryConfig(Strict):
    """Where the attribute library comes from."""

    sources: list[LibrarySource] = Field(
        default_factory=lambda: [LibrarySource(type="catalogue")],
        description="Sources, combined in order (builtin patterns apply to every category: use them for "
        "catalogues without their own size/storage keys, e.g. real marketplace data).",
    )


@dataclass
class AttributeLibrary:
    keys: dict[str, list[str]] = field(default_factory=dict)  # category -> ordered candidate keys
    values: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # category -> key -> values
    patterns: dict[str, str] = field(default_factory=dict)  # key -> regex (any category)
    learned: list[dict] = field(default_factory=list)  # what each column source learned and dropped

    def add(self, category: str, key: str, values: Iterable[str] = ()) -> None:
        ks = self.keys.setdefault(category, [])
        if key not in ks:
            ks.append(key)
        self.values.setdefault(category, {}).setdefault(key, set()).update(v for v in values if v)

    def keys_for(self, category: str) -> list[str]:
        out = list(self.keys.get(category, []))
        out += [k for k in self.keys.get(GENERIC, []) if k not in out]
        return out

    def values_for(self, category: str, key: str) -> set[str]:
        return self.values.get(category, {}).get(key, set()) | self.values.get(GENERIC, {}).get(key, set())

    def categories(self) -> list[str]:
        return [c for c in self.keys if c != GENERIC]


def from_catalogue(lib: AttributeLibrary, path: Optional[str]) -> None:
    from ipl.catalog.catalogue import Catalogue

    cat = Catalogue.build(path, brands_per_category=10_000, models_per_brand=10_000)
    for c in cat.categories.values():
        for key in c.template:
            lib.add(c.name, key)
        lib.add(c.name, "Brand", [v for b, _ in c.brands for v in (b.en, b.zh)])
        lib.add(c.name, "Model", [m for _, models in c.brands for m in models])
        lib.add(c.name, "Color", [v for name in c.colors for v in (name, cat.colors[name]["zh"])])
        lib.add(c.name, c.variant_key, [v for val in c.variant_values for v in (val.en, val.zh)])
        for key, vals in c.listing.items():
            lib.add(c.name, key, [v for val in vals for v in (val.en, val.zh)])


def from_column(lib: AttributeLibrary, src: LibrarySource, rows: Iterable[dict], check=None) -> dict:
    """Add the column's values; returns what was learned and, with ``min_precision``, what ``check``
    (``ipl.extract.gazetteer.value_precision_filter``: extraction lives above this package) dropped."""
    rows = list(rows)
    counts: Counter = Counter()
    for r in rows:
        value = r.get(src.column)
        if value and str(value).strip():
            counts[(r.get("category") if src.per_category else GENERIC, str(value).strip())] += 1
    learned = AttributeLibrary()
    for (category, value), n in counts.items():
        if n >= src.min_count:
            learned.add(category or GENERIC, src.key, [value])
    dropped = {}
    if src.min_precision > 0:
        if check is None:
            raise ValueError(f"library source column={src.column}: min_precision needs the gazetteer's check "
                             "(build the library with ipl.extract.gazetteer.build_checked_library)")
        dropped = check(learned, src, rows)
    for category, keys in learned.values.items():
        lib.add(category, src.key, keys.get(src.key, ()))
    return {"key": src.key, "column": src.column, "values": sum(len(k.get(src.key, ())) for k in learned.values.values()),
            "dropped": dropped}


def build_library(cfg: LibraryConfig, rows: Optional[list[dict]] = None, check=None) -> AttributeLibrary:
    """Combine the configured sources; ``column`` sources read ``rows`` (dicts with the column, and
    ``text`` for ``min_precision``). What each column source learned is in ``lib.learned``."""
    lib = AttributeLibrary()
    for src in cfg.sources:
        if src.type == "catalogue":
            from_catalogue(lib, src.path)
        elif src.type == "column":
            if not src.column or not src.key:
                raise ValueError("a 'column' library source needs both column and key")
            if rows is None:
                raise ValueError(f"the library source column={src.column} needs the listings to learn from")
            lib.learned.append(from_column(lib, src, rows, check))
        else:
            lib.add(GENERIC, "Color", COLORS)
            for key, pattern in PATTERNS.items():
                lib.add(GENERIC, key)
                lib.patterns[key] = pattern
    return lib
