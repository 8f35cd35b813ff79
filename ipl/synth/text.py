"""Casual C2C listing text (the paper's Table 2 response style), English or Chinese.

``write_listing(catalogue, sku, listing_attrs, rng, language)`` returns a title, a
description that mentions the template's attributes in varying order and wording (mostly
early keys first, so template mining has a signal), and the keys actually mentioned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipl.synth.catalogue import SKU, Catalogue, Value

EN = {
    "opener": ["Personal used", "Selling my", "Self-used", "Up for grabs:", "Letting go of my", "Used", "My own"],
    "generic": [
        "condition as shown in the pictures",
        "works perfectly",
        "everything works fine",
        "well looked after",
        "no issues at all",
    ],
    "reason": [
        "upgraded so letting this go",
        "moving out and clearing stuff",
        "got it as a gift, hardly used",
        "don't use it much anymore",
        "bought a new one",
    ],
    "closer": [
        "contact me privately",
        "price negotiable",
        "no lowballers pls",
        "self pickup or shipping both ok",
        "first come first served",
        "ask me anything",
        "shipping included",
    ],
    "color": ["{v}", "{v} colour", "colour is {v}", "in {v}"],
    "variant": ["{v}", "{k} {v}", "{v} version"],
}
ZH = {
    "opener": ["自用", "个人闲置", "出闲置", "转让", "出一台自用", "低价出"],
    "generic": ["成色如图", "功能一切正常", "保护得很好", "无任何问题"],
    "reason": ["换新了所以出", "搬家清东西", "朋友送的很少用", "闲置了用不上"],
    "closer": ["有意私聊", "可小刀", "非诚勿扰", "同城可自提", "包邮", "先到先得"],
    "color": ["{v}", "颜色是{v}", "{v}款"],
    "variant": ["{v}", "{k}{v}"],
}


@dataclass
class ListingText:
    title: str
    description: str
    mentioned: list[str]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def surface_model(model: str, rng: np.random.Generator) -> str:
    """Sellers write model names loosely: 'Mate 10 Pro', 'mate10pro', 'MATE 10 PRO'."""
    r = rng.random()
    if r < 0.12:
        return model.replace(" ", "").lower()
    if r < 0.2:
        return model.lower()
    return model


def write_listing(
    catalogue: Catalogue,
    sku: SKU,
    listing_attrs: dict[str, Value],
    rng: np.random.Generator,
    language: str = "en",
    mention_prob: float = 0.85,
) -> ListingText:
    cat = catalogue.categories[sku.category]
    lex = ZH if language == "zh" else EN
    attrs = {**catalogue.sku_attributes(sku), **listing_attrs}
    brand = sku.brand.text(language)
    model = surface_model(sku.model, rng)
    head = f"{_pick(rng, lex['opener'])} {brand} {model}" if language != "zh" else f"{_pick(rng, lex['opener'])}{brand}{model}"

    # the other template keys, mostly in template order with some jitter, some omitted
    rest = [k for k in cat.template if k not in ("Brand", "Model")]
    order = sorted(rest, key=lambda k: cat.template.index(k) + rng.normal(0, 0.9))
    parts: list[str] = []
    mentioned = ["Brand", "Model"]
    for key in order:
        if rng.random() > mention_prob:
            continue
        value = attrs[key].text(language)
        if key == "Color":
            phrase = _pick(rng, lex["color"]).format(v=value)
        elif key == cat.variant_key:
            phrase = _pick(rng, lex["variant"]).format(v=value, k=catalogue.key_name(key, language))
        else:
            phrase = value
        parts.append(phrase)
        mentioned.append(key)
    extras = [_pick(rng, lex["generic"])]
    if rng.random() < 0.6:
        extras.append(_pick(rng, lex["reason"]))
    closers = [_pick(rng, lex["closer"]) for _ in range(int(rng.integers(1, 3)))]
    closers = list(dict.fromkeys(closers))
    if language == "zh":
        description = "，".join([head, *parts, *extras, *closers]) + "。"
        title = f"{brand}{sku.model} {attrs[cat.variant_key].zh} {attrs['Color'].zh}"
    else:
        body = ", ".join([head, *parts]) + ". " + ", ".join(extras).capitalize() + ". "
        description = body + ", ".join(closers).capitalize() + "."
        title = f"{sku.brand.en} {sku.model} {attrs[cat.variant_key].en} {attrs['Color'].en}"
    return ListingText(title=title, description=description, mentioned=mentioned)
