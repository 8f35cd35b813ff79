"""Streaming output monitor: halts a description that turns unsafe while it is generated.

``OutputMonitor.feed(chunk)`` returns the text that may be sent now, or a halt naming what
was found: PII (phone numbers, WeChat/VX/QQ ids, e-mails, URLs, other platforms) and risk
terms (traffic, fraud wording, low-price bait, prohibited goods), the same detectors that
clean the training data (``ipl.text``). The last ``holdback`` characters are held until
the monitor has seen what follows, so a phone number or an e-mail is caught before any of
it is sent when it fits in the hold-back window; ``finish()`` checks the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
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


class OutputMonitor:
    def __init__(self, holdback: int = 48, terms: Optional[RiskTerms] = None):
        self.holdback = holdback
        self.terms = terms or RiskTerms()
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
        if cut <= self.sent:
            return "", None
        # send whole words only: hold back to the last space before the cut
        space = self.text.rfind(" ", self.sent, cut)
        if space < 0:
            return "", None
        out, self.sent = self.text[self.sent : space + 1], space + 1
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
