"""Decode-time guard: the model cannot write a known value that the evidence does not support.

``blocked_values(facts, unknown, vocabulary, limit)``: for each scored key with a fact, every
other known value of the key in the category; for each key left to the seller, every known
value (nothing calibrated supports any). Synonyms and parts of a fact stay allowed. With
``leads`` (the index's distinctive leading words of multi-word product values,
:func:`ipl.extract.matcher.leading_words`), the leading words of those values that no fact
contains are blocked too, each as a one-item list ``[word]``: as written only ("Michael",
"iPhone", "Watch" but not "watch"), since blocking whole values leaves "Used iPhone 12" for a
watch and "Michael Vuitton" possible. With ``elsewhere`` (the other categories' names this
category's sellers rarely write, :func:`ipl.extract.matcher.category_words`), their singular and
plural forms are blocked like values: a jacket's draft does not say "Letting go of my watch".

* transformers: :class:`ValueGuard`, a logits processor over the token sequences of those
  values (each spelled as written, capitalised and lower-case, with and without a leading
  space): when the text so far ends with all but the last token of a sequence, that last
  token is masked. One processor serves a batch, each row with its own list.
* vLLM: the same strings as ``SamplingParams(bad_words=...)`` (vLLM tokenizes each with and
  without a leading space itself, as written; a ``[word]`` is sent as the word).

What slips through (a spelling the vocabulary lacks) is caught by the verification after
generation (:mod:`ipl.evidence.verify`).
"""
from __future__ import annotations

import weakref
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from transformers import LogitsProcessor

from ipl.extract.matcher import AttributeMatcher, category_forms, guarded_words, value_key

Blocked = Union[str, Sequence[str]]  # a value (all its spellings) or [word] (as written only)


def blocked_values(facts: Mapping[str, str], unknown: Sequence[str], vocabulary: Mapping[str, Iterable[str]],
                   matcher: Optional[AttributeMatcher] = None, limit: int = 2000,
                   leads: Optional[Mapping[str, Iterable[str]]] = None, elsewhere: Iterable[str] = ()
                   ) -> list[Blocked]:
    matcher = matcher or AttributeMatcher()
    words = [[w] for w in guarded_words(leads, facts, unknown, vocabulary, matcher)] if leads else []
    words += category_forms(elsewhere)
    return words + _values(facts, unknown, vocabulary, matcher, max(0, limit - len(words)))


def _values(facts, unknown, vocabulary, matcher: AttributeMatcher, limit: int) -> list[str]:
    if limit <= 0:
        return []
    allowed = set()
    for fact in facts.values():
        allowed |= {value_key(f) for f in matcher.forms(fact)}
    out: dict[str, str] = {}
    for key in [*facts, *unknown]:
        for value in vocabulary.get(key, ()):
            n = value_key(value)
            if not n or n in allowed or any(n in a for a in allowed):
                continue
            if key in facts and matcher.same(facts[key], value):
                continue
            out.setdefault(n, str(value))
            if len(out) >= limit:
                return list(out.values())
    return list(out.values())


def spellings(value: str) -> list[str]:
    forms = {value, value.lower(), value[:1].upper() + value[1:], value.upper() if len(value) <= 4 else value}
    return sorted({p + f for f in forms for p in ("", " ")})


def _forms(value: Blocked) -> list[str]:
    return spellings(value) if isinstance(value, str) else [str(value[0]), " " + str(value[0])]


def _encode(tokenizer, forms: list[str]) -> list[list[int]]:
    """Token ids of each form without special tokens: one batch call of a fast tokenizer (its
    per-string ``encode`` cost about a third of the evaluation's generation time)."""
    if not forms:
        return []
    if getattr(tokenizer, "is_fast", False):
        return [list(ids) for ids in tokenizer(forms, add_special_tokens=False)["input_ids"]]
    return [tokenizer.encode(f, add_special_tokens=False) for f in forms]


def token_sequences(tokenizer, values: Iterable[Blocked]) -> list[list[int]]:
    return [list(s) for s in TokenSequences(tokenizer)(values)]


class _Shared(list):
    """A sequence list :class:`TokenSequences` caches and hands out again (read-only by contract),
    with the guard's prefix table of it, built by the first :class:`ValueGuard` that uses it."""

    table: Optional[tuple[dict, list]] = None


class TokenSequences:
    """:func:`token_sequences` with each value tokenized once per tokenizer (the misses of a call
    in one batch): the serving Generator and the evaluation's workers see the same vocabulary's
    values draft after draft."""

    def __init__(self, tokenizer, max_entries: int = 100_000):
        self.tokenizer, self.max_entries = tokenizer, max_entries
        self._cache: dict = {}  # value (str) or ("=", word) -> its token sequences
        self._lists: dict = {}  # the keys of a whole call -> its sequences (the last 256 calls)

    @staticmethod
    def _key(value: Blocked):
        return value if isinstance(value, str) else ("=", *value)

    def __call__(self, values: Iterable[Blocked]) -> list[tuple[int, ...]]:
        """The token sequences (tuples, sorted; shared between calls: do not modify)."""
        values = list(values)
        missing = {}
        for v in values:
            k = self._key(v)
            if k not in self._cache and k not in missing:
                missing[k] = v
        if missing:
            if len(self._cache) + len(missing) > self.max_entries:
                self._cache.clear()
            spans, forms = [], []
            for k, v in missing.items():
                f = _forms(v)
                spans.append((k, len(forms), len(forms) + len(f)))
                forms += f
            ids = _encode(self.tokenizer, forms)
            for k, a, b in spans:
                self._cache[k] = sorted({tuple(x) for x in ids[a:b] if x})
        keys = tuple(self._key(v) for v in values)
        hit = self._lists.get(keys)
        if hit is None:  # a draft's rows (and the next draft of the category) block the same list
            seqs = set()
            for k in keys:
                seqs.update(self._cache[k])
            hit = _Shared(sorted(seqs))
            if len(self._lists) >= 256:
                self._lists.pop(next(iter(self._lists)))
            self._lists[keys] = hit
        return hit


_SHARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def shared_sequences(tokenizer) -> TokenSequences:
    """The process's :class:`TokenSequences` of ``tokenizer`` (dropped with the tokenizer)."""
    cache = _SHARED.get(tokenizer)
    if cache is None:
        cache = _SHARED[tokenizer] = TokenSequences(tokenizer)
    return cache


class ValueGuard(LogitsProcessor):
    """Masks the last token of a banned sequence when the generated text ends with its prefix.

    ``rows[b]`` is the list of banned token sequences of batch row ``b``; ``prompt_len`` is
    where generation starts (a prefix inside the prompt does not count). A list
    :class:`TokenSequences` handed out keeps its table, so the same values' table is built once."""

    def __init__(self, rows: Sequence[Sequence[Sequence[int]]], prompt_len: int):
        self.prompt_len = prompt_len
        self.rows = [self._table(seqs) for seqs in rows]

    @staticmethod
    def _table(seqs) -> tuple[dict, list]:
        if isinstance(seqs, _Shared) and seqs.table is not None:
            return seqs.table
        by_prefix: dict[tuple, set] = {}
        for s in seqs:
            by_prefix.setdefault(tuple(s[:-1]), set()).add(int(s[-1]))
        table = (by_prefix, sorted({len(p) for p in by_prefix}))
        if isinstance(seqs, _Shared):
            seqs.table = table
        return table

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:].tolist()
        for b, (by_prefix, lengths) in enumerate(self.rows):
            if not by_prefix:
                continue
            tail = generated[b] if b < len(generated) else []
            banned: set = set()
            for n in lengths:
                if n > len(tail):
                    break
                banned |= by_prefix.get(tuple(tail[len(tail) - n:]) if n else (), set())
            if banned:
                scores[b, list(banned)] = -float("inf")
        return scores
