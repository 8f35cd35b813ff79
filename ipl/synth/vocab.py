"""The synthetic catalogue's vocabulary and the fixed prompt text, added to the tokenizer's corpus
by ``ipl synth`` (``ipl.models.tiny.build_tiny_models(vocabulary=...)``)."""
from __future__ import annotations

from typing import Iterator

from ipl.synth.catalogue import Catalogue

PROMPT_REPEATS = 200


def catalogue_corpus() -> Iterator[str]:
    """Every category, key, brand, model and value of the catalogue file (English and Chinese), then the prompts."""
    cat = Catalogue.build(brands_per_category=99, models_per_brand=99)
    for c in cat.categories.values():
        yield f"{c.name} {c.zh} " + " ".join(f"{k} {cat.key_name(k, 'zh')}" for k in c.template)
        for brand, models in c.brands:
            yield f"{brand.en} {brand.zh} " + " ".join(models)
        yield " ".join(v.en + " " + v.zh for v in c.variant_values)
        for values in c.listing.values():
            yield " ".join(v.en + " " + v.zh for v in values)
    yield " ".join(f"{k} {v['zh']}" for k, v in cat.colors.items())
    yield from prompt_corpus(cat)


def prompt_corpus(cat) -> Iterator[str]:
    """The fixed prompt text of every conversation (roles, system turns, the description,
    category and extraction prompts), repeated so BPE learns them as whole words: prompts
    then cost a few tokens per word instead of one per byte pair, which keeps training
    sequences short."""
    from ipl.extract.prompt import SYSTEM, extraction_prompt
    from ipl.generate.prompts import description_prompt, system_prompt

    texts = ["system\nuser\nassistant\n", SYSTEM, "null true false"]
    for lang in ("en", "zh"):
        texts.append(system_prompt(lang))
        for c in cat.categories.values():
            keys = list(c.template)
            texts.append(description_prompt(c.name, keys, {k: "" for k in keys}, lang))
            texts.append(extraction_prompt(c.name, keys, "", lang))
        texts.append(description_prompt(None, None, None, lang))
    texts.append("What category is this item? Answer with one of: 这件商品属于哪个类目？从中选一个：")
    for _ in range(PROMPT_REPEATS):
        yield from texts


