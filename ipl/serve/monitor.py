"""Streaming output monitor: halts a description that turns unsafe while it is generated.

``OutputMonitor.feed(chunk)`` returns the text that may be sent now, or a halt naming what
was found: PII (phone numbers, WeChat/VX/QQ ids, e-mails, URLs, other platforms) and risk
terms (traffic, fraud wording, low-price bait, prohibited goods), the same detectors that
clean the training data (``ipl.text``). The last ``holdback`` characters are held until
the monitor has seen what follows, so a phone number or an e-mail is caught before any of
it is sent when it fits in the hold-back window; ``finish()`` checks the rest. The hold-back
counts characters, and what is released ends at a word break: a space, or either side of a
CJK character (Chinese and Japanese are written without spaces, each character is a break),
so Chinese text flows as it is written while a Latin word, a number or an e-mail address is
never cut in two.

Chinese text is held back less (``cjk_holdback``, ``safety.monitor_cjk_holdback_chars``):
every contact detail the detectors match (a phone number, an id, an e-mail, a URL) is made of
digits, Latin letters and ASCII or full-width punctuation, so it can only be growing in the
trailing run of such characters; the detectors' Chinese words (context words such as 微信,
platforms, risk terms) are short. So what may still become a match starts at most
``cjk_holdback`` characters before that run (or before the end, when the text ends in a
Chinese character), and everything earlier may go. A phone number in Chinese text is held from
its first digit on, and caught before any of it is sent; Latin text keeps the full hold-back.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Optional

from ipl.text.pii import find_pii
from ipl.text.safety import RiskTerms, find_risks


@dataclass(frozen=True)
class Halt:
    kind: str  # pii:<phone|wechat|email|url|platform> or risk:<traffic|fraud|low_price|prohibited>
    message: str


def scan(text: str, terms: RiskTerms) -> Optional[Halt]:
    hits = find_pii(text)
    if hits:
        return Halt(f"pii:{hits[0].kind}", f"the description contained personal/contact information ({hits[0].kind})")
    risks = find_risks(text, terms)
    if risks:
        return Halt(f"risk:{risks[0]}", f"the description contained risky wording ({risks[0]})")
    return None


# CJK ideographs, kana, Hangul, CJK and full-width punctuation: each is a place text may be cut
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0002fa1f]")


# the same, less the full-width forms of ASCII (U+FF01..FF5E): NFKC makes them digits, letters and
# punctuation the contact-detail patterns match
_CJK_INERT = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff5f-\uffef"
                        r"\U00020000-\U0002fa1f]")


def longest_cjk_term(terms: RiskTerms) -> int:
    """Characters of the longest risk term or platform name that contains a CJK character."""
    from ipl.text.pii import _PLATFORMS

    words = [t for group in terms.model_dump().values() if isinstance(group, list) for t in group if isinstance(t, str)]
    longest = 0
    for w in [*words, *_PLATFORMS]:
        if not _CJK.search(w):
            continue
        if re.search(r"[\\()\[\]?|*+{}]", w):  # a regex: its Chinese words (its digits are held as a run)
            longest = max(longest, max(len(run) for run in re.findall(r"[^\x00-\x7f]+", w)) + 2)
        else:
            longest = max(longest, len(w))
    return longest


def last_break(text: str, start: int, cut: int) -> int:
    """The largest position p in (start, cut] where ``text`` may be cut (after a space, or before or
    after a CJK character); ``start`` when there is none."""
    for p in range(cut, start, -1):
        before = text[p - 1]
        if before.isspace() or _CJK.match(before) or (p < len(text) and _CJK.match(text[p])):
            return p
    return start


class OutputMonitor:
    def __init__(self, holdback: int = 48, terms: Optional[RiskTerms] = None, cjk_holdback: Optional[int] = None):
        self.holdback = holdback
        self.terms = terms or RiskTerms()
        # never shorter than the longest Chinese term the detectors know (it must not be half-sent)
        self.cjk_holdback = None if cjk_holdback is None else max(cjk_holdback, longest_cjk_term(self.terms))
        self.text = ""
        self.sent = 0
        self.halt: Optional[Halt] = None

    def feed(self, chunk: str) -> tuple[str, Optional[Halt]]:
        """(text safe to send now, halt or None); after a halt nothing more is sent."""
        if self.halt is not None:
            return "", self.halt
        self.text += chunk
        self.halt = scan(self.text, self.terms)
        if self.halt is not None:
            return "", self.halt
        cut = len(self.text) - self.holdback
        if self.cjk_holdback is not None and self.cjk_holdback < self.holdback:
            run = len(self.text)  # start of the trailing run of characters a contact detail is made of
            while run > self.sent and not _CJK_INERT.match(self.text[run - 1]):
                run -= 1
            cut = max(cut, run - self.cjk_holdback)
        if cut <= self.sent:
            return "", None
        # send whole words only: up to the last break (a space, or a CJK character) before the cut
        end = last_break(self.text, self.sent, cut)
        if end <= self.sent:
            return "", None
        out, self.sent = self.text[self.sent : end], end
        return out, None

    def finish(self, final_text: Optional[str] = None) -> tuple[str, Optional[Halt]]:
        """The rest of the text (``final_text`` if the generator cut the description) after a last check."""
        if self.halt is not None:
            return "", self.halt
        if final_text is not None:
            self.text = final_text
        self.halt = scan(self.text, self.terms)
        if self.halt is not None:
            return "", self.halt
        out = self.text[self.sent:] if len(self.text) >= self.sent else ""
        self.sent = len(self.text)
        return out, None
