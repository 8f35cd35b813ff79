"""Does a text state an attribute value, or another value of the same key?

``AttributeMatcher(synonyms)`` is the one matcher of the project: the evaluation scores
descriptions with it and serving verifies drafts with it. ``states(value, text)``: the value
or a synonym is in the text, matched like grounding (:mod:`ipl.extract.grounding`: NFKC,
case-folded, spaces/hyphens/units tolerated, token boundaries for Latin values).
``contradictions(text, truth, vocabulary)``: the other known values of a key that the text
states, skipping synonyms and parts of the true value (``iPhone 13`` inside ``iPhone 13 Pro``).
``across_categories(vocabulary, category)``: the values a description of ``category`` could
wrongly state: the category's own, then every other category's values of the same keys.
``leading_words(vocabulary, levels, texts, matcher)``: the distinctive first words of multi-word
product values ("Michael" of "Michael Kors"), with which a draft names a product by a part;
``guarded_words(leads, facts, unknown, vocabulary, matcher)``: those of them the evidence does
not support (the guard blocks them, the verification drops them); ``states_word(word, text)``:
the word as written, as a whole word. ``category_words(pairs)`` / ``other_category(text, category,
words)``: a draft calling the item by another category's name ("My own watch" for a jacket) that
this category's sellers rarely write.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping, Optional, Sequence

from ipl.extract.grounding import find_value
from ipl.text.normalize import normalize


def value_key(value: str) -> str:
    """The comparison form of a value: NFKC, lower-case, without spaces, hyphens, underscores, dots."""
    return _value_key(str(value))


@functools.lru_cache(maxsize=1 << 16)  # the same vocabulary's values, compared millions of times per evaluation
def _value_key(value: str) -> str:
    return "".join(c for c in normalize(value).lower() if not c.isspace() and c not in "-_.")


def across_categories(vocabulary: Mapping[str, Mapping[str, Iterable[str]]], category: Optional[str]
                      ) -> dict[str, list[str]]:
    """Key -> the known values of ``category`` first, then those of the same key in every other
    category (each once). A tiny or a 7B model alike can write a brand it learned from another
    category ("Letting go of my Adidas" for a laptop): it is still a wrong Brand, so the guard blocks
    it and the verification and the evaluation count it, which the category's own list alone
    missed. The category's values come first so that a capped list (``evidence.max_blocked``)
    keeps them."""
    def ordered(values: Iterable[str]) -> dict[str, None]:  # a set (no order of its own) is sorted
        values = sorted(map(str, values)) if isinstance(values, (set, frozenset)) else map(str, values)
        return dict.fromkeys(values)

    own = vocabulary.get(category or "", {}) or {}
    out: dict[str, dict[str, None]] = {k: ordered(v) for k, v in own.items()}
    for other, keys in sorted(vocabulary.items()):
        if other == category:
            continue
        for key, values in keys.items():
            if key in out:
                out[key].update(ordered(values))
    return {k: list(v) for k, v in out.items()}


class AttributeMatcher:
    def __init__(self, synonyms: Iterable[Sequence[str]] = ()):
        self._groups: dict[str, set[str]] = {}
        for group in synonyms:
            forms = {str(v) for v in group if str(v).strip()}
            merged = set(forms)
            for f in forms:
                merged |= self._groups.get(value_key(f), set())
            for f in merged:
                self._groups[value_key(f)] = merged

    def forms(self, value: str) -> set[str]:
        """The value and its synonyms."""
        return {str(value)} | self._groups.get(value_key(value), set())

    def same(self, a: str, b: str) -> bool:
        return value_key(a) == value_key(b) or value_key(b) in {value_key(f) for f in self.forms(a)}

    def states(self, value: str, text: str, lowered: Optional[str] = None, squeezed: Optional[str] = None) -> bool:
        """``lowered`` (``normalize(text).lower()``) and ``squeezed`` (``value_key(text)``) when the
        caller has them (one text, many values). A form whose ``value_key`` is not in the squeezed
        text cannot match (the pattern is its characters with optional gaps), so only the others
        are searched."""
        forms = self.forms(value)
        if squeezed is not None:
            forms = [f for f in forms if value_key(f) in squeezed]
            if not forms:
                return False
        lowered = normalize(text).lower() if lowered is None else lowered
        return any(find_value(f, text, lowered) >= 0 for f in forms)

    def contradictions(self, text: str, truth: Mapping[str, str], vocabulary: Mapping[str, Iterable[str]],
                       keys: Optional[Sequence[str]] = None) -> list[tuple[str, str]]:
        """(key, stated value) pairs that contradict ``truth``."""
        out = []
        lowered, squeezed = normalize(text).lower(), value_key(text)
        for key in keys or list(truth):
            true = truth.get(key)
            if not true:
                continue
            true_forms = {value_key(f) for f in self.forms(true)}
            for other in vocabulary.get(key, ()):
                n = value_key(other)
                if not n or n in true_forms or any(n in t for t in true_forms) or self.same(true, other):
                    continue
                if self.states(other, text, lowered, squeezed):
                    out.append((key, str(other)))
        return out


def leading_words(vocabulary: Mapping[str, Mapping[str, Iterable[str]]], levels, texts: Sequence[str],
                  matcher: AttributeMatcher, common: float = 0.02) -> dict[str, list[str]]:
    """The first word of each multi-word product-level value ("Michael" of "Michael Kors", "iPhone" of
    "iPhone 12 Pro") -> those values (``vocabulary``: category -> key -> values; ``levels.level(key)``
    says which keys are product-level), where the word is not an ordinary word of the sellers'
    ``texts`` (it is in at most ``common`` of the texts that state none of its values: "The" of "The
    North Face" is ordinary). The guard blocks whole values, so such a word alone could still be
    written, or go on into a value nobody knows ("Michael Vuitton")."""
    leads: dict[str, set[str]] = {}
    for keys in vocabulary.values():
        for key, values in keys.items():
            if levels.level(key) == "product":
                for v in map(str, values):
                    if " " in v and len(v.split()[0]) >= 3:
                        leads.setdefault(v.split()[0], set()).add(v)
    squeezed = [value_key(t) for t in texts]  # a text can state a value only if it holds its letters in a row
    keys: dict[str, list[str]] = {}

    def says(value: str, i: int) -> bool:
        if value not in keys:
            keys[value] = [value_key(f) for f in matcher.forms(value)]
        return any(k in squeezed[i] for k in keys[value]) and matcher.states(value, texts[i])
    out = {}
    for word, values in sorted(leads.items()):
        others = [i for i in range(len(texts)) if not any(says(v, i) for v in values)]
        if others and sum(says(word, i) for i in others) / len(others) <= common:
            out[word] = sorted(values)
    return out


def guarded_words(leads: Mapping[str, Iterable[str]], facts: Mapping[str, str], unknown: Sequence[str],
                  vocabulary: Mapping[str, Iterable[str]], matcher: AttributeMatcher) -> dict[str, str]:
    """Word -> key: the leading words (:func:`leading_words`) of the values the evidence does not
    support -- any known value of a key left to the seller, any other value of a key with a fact --
    that no fact holds as one of its words ("iPhone" stays allowed beside the fact "iPhone 12")."""
    allowed = {value_key(w) for fact in facts.values() for f in matcher.forms(fact) for w in str(f).split()}
    banned: dict[str, str] = {}
    for key in [*facts, *unknown]:
        for value in vocabulary.get(key, ()):
            if key in facts and matcher.same(facts[key], value):
                continue
            banned.setdefault(value_key(value), key)
    out = {}
    for word, values in leads.items():
        if value_key(word) in allowed:
            continue
        key = next((banned[value_key(v)] for v in values if value_key(v) in banned), None)
        if key is not None:
            out[str(word)] = key
    return out


_CODE = re.compile(r"(?<![A-Za-z0-9-])[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9](?![A-Za-z0-9-])")  # Latin letters and digits
# only: a CJK sentence has no spaces, so "华为Mate10Pro" must give the word "Mate10Pro"


def _code_like(word: str) -> bool:
    """A model number or a measure: letters and digits in one word ("WH-1000XM3", "44mm", "A7")."""
    return len(word) >= 2 and any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


def _one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by exactly one inserted, deleted or replaced character."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def near_values(text: str, facts: Mapping[str, str], unknown: Sequence[str],
                vocabulary: Mapping[str, Iterable[str]], matcher: "AttributeMatcher", said: str = "") -> dict[str, str]:
    """Word -> key: the code-like words of ``text`` (:func:`_code_like`, at least 4 characters) that no
    known value of any key holds as a word, but that are one edit from a code-like value (or word of
    one) of ``facts``' or ``unknown``'s keys: a model number written nearly right ("WH-1000XM3" beside
    the known WH-1000XM4 and WF-1000XM3) names another product, and no guard over known values
    catches it. The facts' own words, and the words of ``said`` (the seller's own notes: their
    "WH-1000XM3" is theirs to state), are never near values."""
    known: set[str] = set()
    for values in vocabulary.values():
        for value in values:
            known.update(value_key(w) for w in [value, *str(value).split()])
    for fact in facts.values():
        for form in matcher.forms(fact):
            known.update(value_key(w) for w in [form, *str(form).split()])
    known.update(value_key(m.group(0)) for m in _CODE.finditer(normalize(said or "")))
    targets: dict[str, str] = {}
    for key in [*facts, *unknown]:
        for value in vocabulary.get(key, ()):
            for w in [value, *str(value).split()]:
                k = value_key(w)
                if _code_like(k) and len(k) >= 4:
                    targets.setdefault(k, key)
    out: dict[str, str] = {}
    for m in _CODE.finditer(normalize(text or "")):
        word = m.group(0)
        k = value_key(word)
        if len(k) < 4 or not _code_like(k) or k in known:
            continue
        key = next((targets[t] for t in targets if _one_edit(k, t)), None)
        if key is not None:
            out.setdefault(word, key)
    return out


def word_pattern(word: str) -> re.Pattern:
    """``word`` as written (case and all), as a whole word: "Watch" of "Watch SE", not "watch"."""
    return re.compile(r"(?<![\w'’])" + re.escape(normalize(word)) + r"(?!\w)")


def states_word(word: str, text: str) -> bool:
    """``text`` holds ``word`` as written (:func:`word_pattern`)."""
    return word_pattern(word).search(normalize(text or "")) is not None


def _names(name: str) -> re.Pattern:
    """A category name as a whole word, any case, singular or plural (:func:`category_forms`)."""
    forms = "|".join(re.escape(f) for f in category_forms([name]))
    return re.compile(rf"(?<![\w])(?:{forms})(?![\w])", re.IGNORECASE)


def category_words(pairs: Iterable[tuple[str, str]], common: float = 0.02) -> dict[str, list[str]]:
    """Category -> the other categories' names its sellers rarely write (in at most ``common`` of its
    texts; ``pairs``: (category, seller text)): "watch" in a phone's draft calls the item something
    it is not; "phone" in a headphones' draft may not (its sellers write it)."""
    texts: dict[str, list[str]] = {}
    for category, text in pairs:
        texts.setdefault(category, []).append(text)
    pats = {c: _names(c) for c in texts}
    out = {}
    for c, mine in texts.items():
        out[c] = [o for o, pat in pats.items() if o != c and mine
                  and sum(bool(pat.search(t or "")) for t in mine) / len(mine) <= common]
    return out


def other_category(text: str, category: str, words: Mapping[str, Sequence[str]]) -> list[str]:
    """The other categories' names (:func:`category_words`) a description of ``category`` writes."""
    return [o for o in words.get(category, ()) if _names(o).search(text or "")]


def category_forms(names) -> list[str]:
    """Each category name singular and plural ("watch", "watches"; "sneakers", "sneaker"): what the
    guard blocks and the verification drops."""
    out = []
    for name in names:
        n = str(name).strip().lower()
        stem = n[:-1] if n.endswith("s") and not n.endswith("ss") else n
        out += [stem, stem + ("es" if stem.endswith(("s", "x", "z", "ch", "sh")) else "s")]
    return list(dict.fromkeys(out))
