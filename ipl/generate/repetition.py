"""Repeated clauses and words taken out of a description, and a looping one ended.

A small or out-of-domain model repeats itself, and greedy decoding does not leave a loop: the
demo model stutters over values in its own domain ("Selling my Seiko Presage, 40mm, 40mm, in
Blue, 40mm, ...", "body only, body only, body only"), and on a real catalogue photo it wrote
"Well looked after, upgraded so letting letting letting letting ..." and "No much anymore.
No much anymore. No as a gift, hardly used. No much anymore. ..." until its token limit. A
seller must not get that text.

Penalising repeats at decode time (a repetition penalty, no-repeat n-grams) would also bend
the values the guard lets through: a model name said a second time, or whose tokens the text
already used, could be pushed mid-name onto another product's name ("iPhone 13 Pro" for
"iPhone 13 Pro Max"), which the verification cannot see, since a part of the fact is not a
problem for it. So the text is not steered; it is edited, clause by clause (a clause ends
after , ; . ! ? or their CJK forms, or a line break), in order:

* a word (or a run of up to six CJK characters) said ``RUN`` or more times in a row within a
  clause is said once ("letting letting letting this go" → "letting this go");
* a clause equal to the clause before it (compared lower-cased, on its words alone) is dropped
  ("40mm, 40mm" → "40mm"), and so is a clause equal to any earlier clause when it has at least
  ``MIN_WORDS`` words (or ``MIN_CJK`` CJK characters): "No much anymore." said a second time
  adds nothing;
* the text **ends** (a loop) at a clause that holds one word ``MAX_RUN`` times in a row, at
  the ``MAX_RUN``-th copy in a row of one clause, or at the ``MAX_REPEATS``-th clause dropped
  as a copy of an earlier, not adjacent one: what a model writes after that is more of the
  same. A dropped clause's sentence end moves onto the clause kept before it ("40mm, 40mm."
  → "40mm.").

Every decision is taken when its clause is complete and depends only on the text before it,
so the edit of a text is a prefix of the edit of any longer text that begins with it: a stream
is cleaned as it is written and stopped at a loop (:class:`Repeats`, the Serve Generator), and
the evaluation, which edits whole generations afterwards (:func:`clean_repeats`), scores what a
seller would have been sent.
"""
from __future__ import annotations

import re
from typing import Optional

MIN_WORDS = 2  # a clause repeated further back counts only with this many words ("yes," does not)
MIN_CJK = 3
RUN = 3  # a word said this many times in a row is said once
MAX_RUN = 8  # ... and this many times ends the text, as does this many copies in a row of a clause
MAX_REPEATS = 4  # clauses dropped as copies of earlier, not adjacent clauses before the text ends

_DELIMS = ",;.!?，；。！？、\n"
_CLAUSE = re.compile(r"[^%s]*[%s]+|[^%s]+" % ((re.escape(_DELIMS),) * 3))
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[^\W\d_\u3400-\u9fff]+|\d+|[\u3400-\u9fff]", re.UNICODE)
_SENTENCE_ENDS = ".!?。！？\n"
_SOFT_ENDS = ",;，；、"


def _runs(times: int) -> list[re.Pattern]:
    return [re.compile(r"\b([^\W\d_]+|\d+)\b(?:\s+\1\b){%d,}" % (times - 1), re.IGNORECASE),
            re.compile(r"([\u3400-\u9fff]{1,6}?)\1{%d,}" % (times - 1))]


_COLLAPSE, _LOOPING = _runs(RUN), _runs(MAX_RUN)


def _key(clause: str) -> tuple[str, bool]:
    """The clause's words, lower-cased, and whether it is long enough to count as a copy of a clause further back."""
    words = _WORD.findall(clause.lower())
    cjk = sum(1 for w in words if _CJK.match(w))
    return " ".join(words), len(words) - cjk >= MIN_WORDS or cjk >= MIN_CJK


def _collapse(clause: str) -> str:
    for pattern in _COLLAPSE:
        clause = pattern.sub(r"\1", clause)
    return clause


def _capital(clause: str) -> str:
    i = len(clause) - len(clause.lstrip())
    return clause[:i] + clause[i:i + 1].upper() + clause[i + 1:]


def _looping(clause: str) -> bool:
    return any(p.search(clause) for p in _LOOPING)


class Repeats:
    """A description's repeats taken out as it is written.

    ``feed(text)`` takes the whole raw text so far (each call a longer one) and returns the
    edited text of its complete clauses (the clause not yet ended, and the closing punctuation of
    the last one, are held back);
    ``finish(text)`` also takes the last clause and returns the edited description. ``ended``
    is set once a loop ended the text (nothing after it is read); ``removed`` holds the dropped
    clauses and ``collapsed`` counts the runs said once."""

    def __init__(self) -> None:
        self.pos = 0
        self.kept: list[str] = []
        self.last = ""  # the key of the last clause read (kept or dropped)
        self.seen: set[str] = set()
        self.streak = 1
        self.repeats = 0
        self.removed: list[str] = []
        self.collapsed = 0
        self.ended = False
        self.dropped = False  # the clause read last was dropped

    def _end(self, clause: str) -> None:
        self.ended = True
        self.removed.append(clause)

    def _take(self, clause: str) -> None:
        if _looping(clause):
            return self._end(clause)
        edited = _collapse(clause)
        self.collapsed += edited != clause
        key, long_enough = _key(edited)
        if key and key == self.last:
            self.streak += 1
            if self.streak >= MAX_RUN:
                return self._end(clause)
        elif key and long_enough and key in self.seen:
            self.repeats += 1
            self.last, self.streak = key, 1
            if self.repeats >= MAX_REPEATS:
                return self._end(clause)
        else:
            if key:
                self.last, self.streak = key, 1
                if long_enough:
                    self.seen.add(key)
            if self.dropped and self.kept and self.kept[-1].rstrip(" ")[-1:] in _SENTENCE_ENDS:
                edited = _capital(edited)  # a clause that now starts a sentence
            self.kept.append(edited)
            self.dropped = False
            return
        self.removed.append(clause)
        self.dropped = True
        end = clause.rstrip(" ")[-1:]
        if end and end in _SENTENCE_ENDS and self.kept:  # "40mm, 40mm." → "40mm."
            prev = self.kept[-1].rstrip(" ")
            if prev[-1:] in _SOFT_ENDS:
                self.kept[-1] = prev[:-1] + ("。" if _CJK.match(end) or end in "。！？" else end) + \
                    self.kept[-1][len(prev):]

    def feed(self, text: str) -> str:
        """The edit of ``text``'s complete clauses without the last one's closing punctuation (a
        repeat dropped after it may still move its sentence end onto it), so what it returns only
        ever grows; a clause not yet ended is held back (it may turn out to be a repeat)."""
        while not self.ended:
            m = _CLAUSE.match(text, self.pos)
            if m is None or not m.group():
                break
            clause = m.group()
            if m.end() == len(text) and clause[-1] not in _DELIMS:  # not ended yet
                if _looping(clause):
                    self._end(clause)
                break
            self.pos = m.end()
            self._take(clause)
        return "".join(self.kept).strip().rstrip(_DELIMS + " ")

    def finish(self, text: str) -> str:
        self.feed(text)
        if not self.ended and self.pos < len(text):
            clause, self.pos = text[self.pos:], len(text)
            self._take(clause)
        out = "".join(self.kept).strip()
        if out and (self.ended or self.removed) and out[-1] in _SOFT_ENDS:
            out = out[:-1] + ("。" if _CJK.match(out[-2:-1] or "") else ".")
        return out


def clean_repeats(text: str) -> tuple[str, dict]:
    """(the description with its repeats taken out, what was done: ``removed`` clauses,
    ``collapsed`` runs, ``ended`` by a loop); the text stripped and unchanged when it repeats nothing."""
    r = Repeats()
    out = r.finish(text or "")
    return out, {"removed": [c.strip() for c in r.removed], "collapsed": r.collapsed, "ended": r.ended}
