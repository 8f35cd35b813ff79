"""Checking a written description against the evidence, and repairing it by dropping clauses.

``check(text, facts, unknown, vocabulary, matcher)`` looks at every scored key (product and
SKU level) with the evaluation's matcher: for a key with a fact, any other known value of the
key stated in the text is a ``contradiction``; for a key left to the seller, any known value
is ``unsupported`` (nothing calibrated says it). Synonyms and parts of the fact
(``iPhone 13`` inside ``iPhone 13 Pro``) are not problems. With ``leads`` (the index's
distinctive leading words, :func:`ipl.extract.matcher.leading_words`), a guarded leading word
written as a whole word, as written, without the value it starts is a ``partial`` problem
("Michael Vuitton", "Used iPhone 12" for a watch). With ``elsewhere`` (other categories' names
this category's sellers rarely write), writing one is a ``category`` problem ("my watch" for a
jacket). A code-like word one edit from a known model number or measure of a scored key, which
no known value holds ("WH-1000XM3" beside WH-1000XM4 and WF-1000XM3:
:func:`ipl.extract.matcher.near_values`), is a ``near`` problem: it names another product.

``repair(text, values, matcher, keep)`` drops the clauses (split at , ; . ! ? and their CJK
forms, and line breaks) that state a problem value; a clause that also states a fact keeps
the fact and loses only the value. It returns the text with what was removed. ``verify`` does both and returns the reply's ``verification`` object. The same
clause dropping cleans training targets (:mod:`ipl.data.instructions`), so the model is
trained on what serving would let through. With ``add_missing`` the facts the text leaves
out are appended as one short sentence (``Color: Blue.``), reported in ``added``.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.grounding import value_pattern
from ipl.extract.matcher import (AttributeMatcher, category_forms, guarded_words, near_values, states_word, value_key,
                                 word_pattern)
from ipl.text.normalize import has_cjk, normalize

_CLAUSE = re.compile(r"[^,;.!?，；。！？\n]+[,;.!?，；。！？\n]*")


def clauses(text: str) -> list[str]:
    """The text cut after each clause delimiter; ''.join(clauses(t)) == t."""
    parts = _CLAUSE.findall(text or "")
    rest = (text or "")[len("".join(parts)):]
    return parts + ([rest] if rest else [])


def _other_values(key: str, fact: str, vocabulary: Mapping[str, Iterable[str]], matcher: AttributeMatcher):
    fact_forms = {value_key(f) for f in matcher.forms(fact)}
    for other in vocabulary.get(key, ()):
        n = value_key(other)
        if not n or n in fact_forms or any(n in f for f in fact_forms) or matcher.same(fact, other):
            continue
        yield str(other)


def check(text: str, facts: Mapping[str, str], unknown: Sequence[str], vocabulary: Mapping[str, Iterable[str]],
          matcher: AttributeMatcher, leads: Optional[Mapping[str, Iterable[str]]] = None,
          elsewhere: Iterable[str] = (), notes: Optional[str] = None) -> list[dict]:
    problems = []
    fact_keys = {value_key(v) for v in facts.values()}
    said = (text, normalize(text).lower(), value_key(text))  # one text against every known value

    def states(value: str) -> bool:
        return matcher.states(value, *said)

    for key, fact in facts.items():
        for other in _other_values(key, fact, vocabulary, matcher):
            if states(other):
                problems.append({"key": key, "stated": other, "expected": fact, "kind": "contradiction"})
    for key in unknown:
        for value in vocabulary.get(key, ()):
            n = value_key(value)
            if n and not any(n in f for f in fact_keys) and states(str(value)):
                problems.append({"key": key, "stated": str(value), "expected": None, "kind": "unsupported"})
    for word, key in (guarded_words(leads, facts, unknown, vocabulary, matcher) if leads else {}).items():
        if states_word(word, text) and not any(states(str(v)) for v in leads[word]):
            problems.append({"key": key, "stated": word, "expected": facts.get(key), "kind": "partial"})
    for name in category_forms(elsewhere):
        if states(name):
            problems.append({"key": None, "stated": name, "expected": None, "kind": "category"})
    for word, key in near_values(text, facts, unknown, vocabulary, matcher, notes or "").items():
        problems.append({"key": key, "stated": word, "expected": facts.get(key), "kind": "near"})
    return problems


def _cut(part: str, value: str, matcher: AttributeMatcher, exact: bool = False) -> str:
    """``part`` without the spans stating ``value`` (or a synonym; ``exact``: the word as written)."""
    forms = [value] if exact else sorted(matcher.forms(value), key=len, reverse=True)
    for form in forms:
        short = exact or (len(normalize(form)) <= 2 and not has_cjk(form))
        pat = word_pattern(form) if exact else value_pattern(form)
        if pat is None:
            continue
        hay = part if short else part.lower()
        spans = [m.span() for m in pat.finditer(hay)] if len(hay) == len(part) else []
        for a, b in reversed(spans):
            part = part[:a].rstrip(" ") + (" " if a and b < len(part) and part[b:b + 1].isalnum() else "") + part[b:]
    return part


def repair(text: str, values: Iterable[str], matcher: AttributeMatcher,
           keep: Iterable[str] = (), words: Iterable[str] = ()) -> tuple[str, list[str]]:
    """``text`` without what states any of ``values`` or of ``words`` (whole words, as written);
    (new text, removed pieces). A clause that states one is dropped whole, unless it also states
    one of ``keep`` (the facts): then only the value itself is cut out of it, so a fact written
    beside an unknown value survives."""
    values, keep, words = list(dict.fromkeys(values)), list(keep), list(dict.fromkeys(words))
    kept, removed = [], []
    for part in clauses(text):
        bad = [(v, False) for v in values if matcher.states(v, part)] + [(w, True) for w in words
                                                                        if states_word(w, part)]
        if not bad:
            kept.append(part)
        elif any(matcher.states(k, part) for k in keep):
            cut = part
            for v, exact in bad:
                cut = _cut(cut, v, matcher, exact)
            removed.extend(v for v, _ in bad)
            kept.append(cut)
        else:
            removed.append(part.strip())
    out = re.sub(r"\s+([,;.!?，；。！？])", r"\1", "".join(kept)).strip()
    out = re.sub(r"^[,;，；\s]+", "", out)
    return out, removed


def complete(text: str, facts: Mapping[str, str], matcher: AttributeMatcher, language: str = "en"
             ) -> tuple[str, list[str]]:
    """``text`` with the facts it does not state appended as one short sentence; (text, keys added)."""
    missing = [k for k, v in facts.items() if not matcher.states(str(v), text)]
    if not missing:
        return text, []
    if language == "zh":
        tail = "，".join(f"{k}：{facts[k]}" for k in missing) + "。"
    else:
        tail = ", ".join(f"{k}: {facts[k]}" for k in missing) + "."
    sep = "" if not text or language == "zh" else " "
    if text and text[-1] not in ".!?。！？":
        text += "。" if language == "zh" else "."
    return (text + sep + tail).strip(), missing


def verify(text: str, facts: Mapping[str, str], unknown: Sequence[str], vocabulary: Mapping[str, Iterable[str]],
           matcher: AttributeMatcher, add_missing: bool = False, language: str = "en",
           leads: Optional[Mapping[str, Iterable[str]]] = None, elsewhere: Iterable[str] = (),
           notes: Optional[str] = None) -> tuple[str, dict]:
    """(the description to show, the ``verification`` object of the reply). ``add_missing``:
    facts the text left out are appended (``added``), so every stated/confirmed value is in the draft.
    ``leads``: the index's leading words (``partial`` problems); ``elsewhere``: other categories'
    names (``category`` problems); ``notes``: the seller's own words (a model number they wrote is
    not a ``near`` problem)."""
    elsewhere = list(elsewhere or ())
    problems = check(text, facts, unknown, vocabulary, matcher, leads, elsewhere, notes)
    keys = [*facts, *unknown]
    out = {"checked": len(keys), "problems": problems, "repaired": bool(problems), "removed": [], "added": [],
           "ok": True}
    if problems:
        words = ("partial", "near")  # removed as written, whole words
        text, out["removed"] = repair(text, [p["stated"] for p in problems if p["kind"] not in words], matcher,
                                      facts.values(), [p["stated"] for p in problems if p["kind"] in words])
        out["ok"] = not check(text, facts, unknown, vocabulary, matcher, leads, elsewhere, notes)
    if add_missing:
        text, out["added"] = complete(text, facts, matcher, language)
    return text, out
