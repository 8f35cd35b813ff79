"""Attribute extraction as a Ray Data batch stage: gazetteer always, the LLM when configured.

``ExtractAttributes(library_cfg, llm_cfg, rows_for_library)`` adds per row:

* ``extracted``: JSON ``{key: value}``: the gazetteer's value where it found one, else the
  LLM's value when it is grounded in the text;
* ``extracted_meta``: JSON ``{key: {"pos": offset, "source": "gazetteer"|"pattern"|"llm"}}``;
* ``extract_stats``: JSON counts for the summary: LLM values kept/ungrounded/unknown keys/
  unparsable replies, and agreement of the LLM with the gazetteer where both answered.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Optional

from ipl.catalog.library import AttributeLibrary, LibraryConfig
from ipl.data.contract import require_columns
from ipl.extract.gazetteer import Gazetteer, build_checked_library
from ipl.extract.grounding import find_value
from ipl.extract.llm import LLMConfig, make_extractor
from ipl.extract.prompt import extraction_messages, parse_reply
from ipl.text.normalize import normalize


def merge(gaz: dict, llm: dict[str, str], text: str, stats: Counter) -> tuple[dict, dict]:
    values = {k: f.value for k, f in gaz.items()}
    meta = {k: {"pos": f.pos, "source": f.source} for k, f in gaz.items()}
    low = normalize(text).lower()
    for key, value in llm.items():
        pos = find_value(value, text, low)
        if pos < 0:
            stats["llm_ungrounded"] += 1
            continue
        stats["llm_grounded"] += 1
        if key in values:
            stats["llm_agrees" if normalize(values[key]).lower() == value.lower() else "llm_disagrees"] += 1
            continue
        values[key] = value
        meta[key] = {"pos": pos, "source": "llm"}
    return values, meta


class ExtractAttributes:
    def __init__(self, library_cfg: LibraryConfig, llm_cfg: LLMConfig, library_rows: Optional[list[dict]] = None,
                 library: Optional[AttributeLibrary] = None):
        self.library = library or build_checked_library(library_cfg, library_rows)
        self.gazetteer = Gazetteer(self.library)
        self.llm = make_extractor(llm_cfg)

    def __call__(self, batch: dict) -> dict:
        require_columns(batch, ["category", "text"], "extract_attributes")
        n = len(batch["text"])
        cats, texts = list(batch["category"]), list(batch["text"])
        languages = batch.get("language", ["en"] * n)
        llm_values: list[dict] = [{} for _ in range(n)]
        issues = [Counter() for _ in range(n)]
        if self.llm is not None:
            convs, idx = [], []
            for i in range(n):
                keys = self.library.keys_for(cats[i])
                if keys and texts[i]:
                    convs.append(extraction_messages(cats[i], keys, texts[i], languages[i] or "en"))
                    idx.append(i)
            for i, reply in zip(idx, self.llm.generate(convs) if convs else []):
                llm_values[i], issues[i] = parse_reply(reply, self.library.keys_for(cats[i]))
        extracted, metas, stats = [], [], []
        for i in range(n):
            st = Counter({f"llm_{k}": v for k, v in issues[i].items()})
            values, meta = merge(self.gazetteer.extract(texts[i], cats[i]), llm_values[i], texts[i], st)
            extracted.append(json.dumps(values, ensure_ascii=False))
            metas.append(json.dumps(meta, ensure_ascii=False))
            stats.append(json.dumps(st))
        out = dict(batch)
        out["extracted"], out["extracted_meta"], out["extract_stats"] = extracted, metas, stats
        return out
