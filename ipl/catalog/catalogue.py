"""The product catalogue: categories, templates, SPUs and SKUs (the synthetic marketplace draws
its listings from it; the attribute library's ``catalogue`` source and the tiny model's copy
pretraining read its values).

Loaded from ``catalogue.yaml`` beside this file (operators can point ``catalogue.path`` at
an edited copy). ``Catalogue.build(sizing)`` enumerates, deterministically:

* SPU = brand + model (shares shape and logo), id ``phone/huawei/mate-10-pro``;
* SKU = SPU + variant attributes (colour + one size-like attribute such as Storage),
  id ``phone/huawei/mate-10-pro/blue/128gb``.

Every value carries an English and a Chinese surface form (``Value.en``, ``Value.zh``).
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import yaml

CATALOGUE_YAML = Path(__file__).with_name("catalogue.yaml")
SPU_LEVEL = ("Brand", "Model")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class Value:
    """An attribute value in English and Chinese."""

    en: str
    zh: str

    @classmethod
    def parse(cls, raw: str) -> "Value":
        en, _, zh = str(raw).partition("|")
        return cls(en.strip(), (zh or en).strip())

    def text(self, language: str) -> str:
        return self.zh if language == "zh" else self.en


@dataclass(frozen=True)
class Category:
    name: str
    zh: str
    shape: str
    base_price: float
    template: tuple[str, ...]
    brands: tuple[tuple[Value, tuple[str, ...]], ...]
    colors: tuple[str, ...]
    variant_key: str
    variant_values: tuple[Value, ...]
    listing: dict = field(hash=False, compare=False)  # key -> tuple[Value, ...]
    condition_key: Optional[str] = None  # the listing-level key whose values (best first) grade the condition

    def level(self, key: str) -> str:
        if key in SPU_LEVEL:
            return "spu"
        if key in ("Color", self.variant_key):
            return "sku"
        return "listing"


@dataclass(frozen=True)
class SKU:
    sku_id: str
    spu_id: str
    category: str
    brand: Value
    model: str
    color: str
    variant: Value
    brand_index: int
    model_index: int
    price_factor: float


@dataclass
class Catalogue:
    categories: dict[str, Category]
    colors: dict[str, dict]
    attribute_names: dict[str, str]
    skus: list[SKU]
    spus: list[str]
    condition_grades: tuple = ()  # Value, best first

    @classmethod
    def build(
        cls,
        path: Optional[str | Path] = None,
        categories: Optional[list[str]] = None,
        brands_per_category: int = 3,
        models_per_brand: int = 3,
        colors_per_spu: int = 3,
        variants_per_spu: int = 2,
    ) -> "Catalogue":
        raw = _load_yaml(str(path or CATALOGUE_YAML))
        cats = {name: _parse_category(name, spec) for name, spec in raw["categories"].items()}
        if categories:
            unknown = [c for c in categories if c not in cats]
            if unknown:
                raise ValueError(f"catalogue.categories: unknown {unknown}; known: {sorted(cats)}")
            cats = {c: cats[c] for c in categories}
        skus: list[SKU] = []
        spus: list[str] = []
        for cat in cats.values():
            for bi, (brand, models) in enumerate(cat.brands[:brands_per_category]):
                for mi, model in enumerate(models[:models_per_brand]):
                    spu_id = f"{cat.name}/{slug(brand.en)}/{slug(model)}"
                    spus.append(spu_id)
                    # each SPU comes in its own subset of the category palette
                    start = stable_hash(spu_id) % len(cat.colors)
                    n_colors = min(colors_per_spu, len(cat.colors))
                    colors = [cat.colors[(start + k) % len(cat.colors)] for k in range(n_colors)]
                    model_factor = 0.7 + 0.3 * mi + 0.15 * bi
                    for color in colors:
                        for vi, variant in enumerate(cat.variant_values[:variants_per_spu]):
                            skus.append(
                                SKU(
                                    sku_id=f"{spu_id}/{slug(color)}/{slug(variant.en)}",
                                    spu_id=spu_id,
                                    category=cat.name,
                                    brand=brand,
                                    model=model,
                                    color=color,
                                    variant=variant,
                                    brand_index=bi,
                                    model_index=mi,
                                    price_factor=model_factor * (1.0 + 0.2 * vi),
                                )
                            )
        if not skus:
            raise ValueError("catalogue has no SKUs: check catalogue sizing")
        grades = tuple(Value.parse(g) for g in raw.get("condition_grades", ()))
        return cls(cats, raw["colors"], raw["attribute_names"], skus, spus, grades)

    def condition_of(self, category: str, listing_attrs: dict) -> Optional[Value]:
        """The condition grade of a listing: its ``condition_key`` value's position (best first) scaled
        onto ``condition_grades`` (None without either)."""
        cat = self.categories[category]
        value = listing_attrs.get(cat.condition_key) if cat.condition_key else None
        if value is None or not self.condition_grades:
            return None
        values = cat.listing[cat.condition_key]
        return self.condition_grades[values.index(value) * len(self.condition_grades) // len(values)]

    def color_value(self, name: str) -> Value:
        return Value(name, self.colors[name]["zh"])

    def color_rgb(self, name: str) -> tuple[int, int, int]:
        return tuple(self.colors[name]["rgb"])

    def key_name(self, key: str, language: str) -> str:
        return self.attribute_names.get(key, key) if language == "zh" else key

    def sku_attributes(self, sku: SKU) -> dict[str, Value]:
        """The SPU- and SKU-level attribute values (what identical listings share)."""
        cat = self.categories[sku.category]
        return {
            "Brand": sku.brand,
            "Model": Value(sku.model, sku.model),
            "Color": self.color_value(sku.color),
            cat.variant_key: sku.variant,
        }


@lru_cache(maxsize=4)
def _load_yaml(path: str) -> dict:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for key in ("colors", "attribute_names", "categories"):
        if key not in data:
            raise ValueError(f"{path}: catalogue is missing the {key!r} section")
    return data


def _parse_category(name: str, spec: dict) -> Category:
    (variant_key, variant_values), = spec["variant"].items()
    template = tuple(spec["template"])
    listing = {k: tuple(Value.parse(v) for v in vals) for k, vals in spec.get("listing", {}).items()}
    missing = [k for k in template if k not in ("Brand", "Model", "Color", variant_key) and k not in listing]
    if missing:
        raise ValueError(f"catalogue category {name}: template keys {missing} have no values")
    condition_key = spec.get("condition_key", "Condition" if "Condition" in listing else None)
    if condition_key is not None and condition_key not in listing:
        raise ValueError(f"catalogue category {name}: condition_key {condition_key!r} is not a listing attribute "
                         f"(known: {sorted(listing)})")
    return Category(
        name=name,
        zh=spec["zh"],
        shape=spec["shape"],
        base_price=float(spec["base_price"]),
        template=template,
        brands=tuple((Value.parse(b), tuple(models)) for b, models in spec["brands"].items()),
        colors=tuple(spec["colors"]),
        variant_key=variant_key,
        variant_values=tuple(Value.parse(v) for v in variant_values),
        listing=listing,
        condition_key=condition_key,
    )


def synonym_groups(cat: "Catalogue") -> list[list[str]]:
    """English/Chinese surface forms of the catalogue's values (both state the same value): what
    ``ipl synth`` writes to ``<run>/raw/_synonyms.json`` for the evaluation's matcher."""
    groups = [[name, spec["zh"]] for name, spec in cat.colors.items() if spec.get("zh")]
    for c in cat.categories.values():
        groups += [[b.en, b.zh] for b, _ in c.brands] + [[v.en, v.zh] for v in c.variant_values]
        for values in c.listing.values():
            groups += [[v.en, v.zh] for v in values]
    return [g for g in groups if g[0] != g[1]]
