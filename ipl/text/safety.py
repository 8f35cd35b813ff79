"""Text risk screening: traffic to other platforms, fraud wording, low-price bait, prohibited terms.

Term lists are configurable (:class:`RiskTerms`); matching is on NFKC-normalised,
lower-cased text. ``find_risks(text, terms)`` returns the risk kinds present; the cleaning
stage drops such rows and the serving output monitor halts on them.
"""
from __future__ import annotations

import re
from functools import lru_cache

from pydantic import Field

from ipl.config import Strict
from ipl.text.normalize import normalize


class RiskTerms(Strict):
    """Phrases that mark a listing as risky, per kind (case-insensitive substrings or regexes).

    "my shop" is not traffic: on a C2C marketplace it is the seller's other listings on the same
    platform (Mercari sellers write it often)."""

    traffic: list[str] = Field(
        default_factory=lambda: [
            "taobao", "淘宝", "pinduoduo", "拼多多", "ebay store", "dm me on", "instagram", "抖音",
            "店铺", "闲鱼外", "outside the app", "平台外",
        ],
        description="Traffic to other platforms or off-platform deals.",
    )
    fraud: list[str] = Field(
        default_factory=lambda: [
            "deposit first", "verification code", "bank transfer", "100% refund", "refund guaranteed",
            "定金", "验证码", "保证退款", "先付款", "western union", "gift card",
        ],
        description="Fraud wording (advance payment, code phishing).",
    )
    low_price: list[str] = Field(
        default_factory=lambda: [
            # "only 9.9 today", "just $1" -- not "only 1 week", "just 1 left"
            r"\b(?:only|just) ?\$?(?:0\.99|1|9\.9)(?![\d.])(?! ?(?:week|day|month|year|hour|min|minute|time|left|"
            r"piece|pc|item|size|pair|owner|use|wear)s?\b)",
            "1 dollar", "flash sale", "一元", "秒杀",
            # 9.9 as a price ("9.9元", "只要9.9"), not as a condition ("9.9新") or inside 39.95
            r"(?<![\d.])9\.9(?![\d.]) ?(?:元|块|包邮|\$|dollars?|usd)", r"只要 ?9\.9(?![\d.])",
        ],
        description="Low-price bait (regexes).",
    )
    prohibited: list[str] = Field(
        default_factory=lambda: ["counterfeit", "replica", "fake id", "高仿", "假货", "weapon", "drugs", "毒品"],
        description="Prohibited goods and wording.",
    )


@lru_cache(maxsize=16)
def _compile(terms: tuple[str, ...], regex: bool) -> re.Pattern:
    parts = terms if regex else tuple(re.escape(t) for t in terms)
    return re.compile("|".join(parts) or r"(?!x)x", re.I)


def find_risks(text: str, terms: RiskTerms) -> list[str]:
    """The risk kinds (traffic, fraud, low_price, prohibited) whose terms occur in ``text``."""
    t = normalize(text).lower()
    kinds = []
    for kind in ("traffic", "fraud", "low_price", "prohibited"):
        if _compile(tuple(getattr(terms, kind)), kind == "low_price").search(t):
            kinds.append(kind)
    return kinds
