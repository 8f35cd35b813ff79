"""Dirty-row injection for the cleaning stage (paper Appendix A.1), each with its label.

A row gets at most one ``dirty_reason``; :data:`REASONS` lists them. The perturbation
functions take the clean text and an rng and return the dirty text (and, for risk rows,
the platform's risk flag). Rates live in :class:`ipl.synth.config.DirtyRates`.
"""
from __future__ import annotations

import numpy as np

REASONS = (
    "low_quality",
    "risk_traffic",
    "risk_low_price",
    "risk_fraud",
    "privacy_phone",
    "privacy_wechat",
    "privacy_email",
    "privacy_url",
    "too_short",
    "too_long",
    "special_chars",
    "image_text_mismatch",
    "near_duplicate",
)

RISK_FLAG = {"risk_traffic": "traffic", "risk_low_price": "low_price", "risk_fraud": "fraud"}

_TRAFFIC = {
    "en": ["cheaper on my taobao shop", "check my ebay store for more", "also on pinduoduo, search my name",
           "dm me on instagram for a better deal"],
    "zh": ["淘宝店铺有更多", "拼多多搜我店名更便宜", "去抖音找我下单", "闲鱼外交易更便宜"],
}
_FRAUD = {
    "en": ["pay a deposit first by bank transfer", "send me the verification code to confirm",
           "payment outside the app only, 100% refund guaranteed"],
    "zh": ["先付定金再发货", "把验证码发我确认一下", "平台外付款，保证退款"],
}
_LOW_PRICE = {"en": ["only 9.9 today", "1 dollar flash sale"], "zh": ["今天只要9.9", "一元秒杀"]}
_SPECIAL = "★☆♥♦♣♠•◆◇■□▲△▼▽※#$%&*@!~^+=|<>"
_WORDS = ["a", "b", "c", "d", "e", "f", "k", "m", "n", "p", "r", "s", "t", "x", "y", "z"]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def fullwidth(text: str) -> str:
    """ASCII digits and letters to their full-width forms (what NFKC undoes)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def phone_number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(5))
    mobile = "1" + _pick(rng, ["3", "5", "7", "8", "9"]) + _digits(rng, 9)
    if kind == 0:
        return mobile
    if kind == 1:
        return f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}"
    if kind == 2:
        return "+86 " + mobile
    if kind == 3:
        return fullwidth(mobile)
    return f"+1 ({_digits(rng, 3)}) {_digits(rng, 3)}-{_digits(rng, 4)}"


def wechat_id(rng: np.random.Generator, language: str) -> str:
    handle = "".join(_pick(rng, _WORDS) for _ in range(int(rng.integers(4, 8)))) + _digits(rng, 3)
    en = ["wechat: {h}", "VX {h}", "add my wechat {h}", "wx: {h}", "v: {h}"]
    zh = ["加微信{h}", "薇信：{h}", "VX：{h}", "加v {h}", "微{h}"]
    return _pick(rng, zh if language == "zh" else en).format(h=handle)


def email(rng: np.random.Generator) -> str:
    user = "".join(_pick(rng, _WORDS) for _ in range(int(rng.integers(4, 9)))) + _digits(rng, 2)
    return f"{user}@{_pick(rng, ['gmail.com', 'qq.com', '163.com', 'outlook.com'])}"


def url(rng: np.random.Generator) -> str:
    site = "".join(_pick(rng, _WORDS) for _ in range(6))
    return _pick(rng, [f"https://{site}.shop/item", f"www.{site}.com", f"http://bit.ly/{site}"])


def _insert(text: str, snippet: str, rng: np.random.Generator, language: str) -> str:
    sep = "，" if language == "zh" else ", "
    parts = text.rstrip("。.").split(sep)
    at = int(rng.integers(1, len(parts) + 1))
    parts.insert(at, snippet)
    return sep.join(parts) + ("。" if language == "zh" else ".")


def apply_text(reason: str, text: str, rng: np.random.Generator, language: str) -> str:
    """The dirty version of ``text`` for a text-level ``reason`` (others return text)."""
    lang = "zh" if language == "zh" else "en"
    if reason == "risk_traffic":
        return _insert(text, _pick(rng, _TRAFFIC[lang]), rng, lang)
    if reason == "risk_fraud":
        return _insert(text, _pick(rng, _FRAUD[lang]), rng, lang)
    if reason == "risk_low_price":
        return _insert(text, _pick(rng, _LOW_PRICE[lang]), rng, lang)
    if reason == "privacy_phone":
        lead = _pick(rng, ["电话", "联系", "手机"] if lang == "zh" else ["call", "text me at", "phone"])
        return _insert(text, f"{lead} {phone_number(rng)}", rng, lang)
    if reason == "privacy_wechat":
        return _insert(text, wechat_id(rng, lang), rng, lang)
    if reason == "privacy_email":
        lead = "邮箱" if lang == "zh" else _pick(rng, ["email me", "mail"])
        return _insert(text, f"{lead} {email(rng)}", rng, lang)
    if reason == "privacy_url":
        lead = "更多图片看" if lang == "zh" else _pick(rng, ["more pics at", "see"])
        return _insert(text, f"{lead} {url(rng)}", rng, lang)
    if reason == "too_short":
        return _pick(rng, ["出", "自用", "便宜出"]) if lang == "zh" else _pick(rng, ["sell", "for sale", "good", "used"])
    if reason == "too_long":
        repeats = int(rng.integers(14, 22))
        return " ".join([text] * repeats)
    if reason == "special_chars":
        spam = "".join(_pick(rng, _SPECIAL) for _ in range(max(40, len(text) // 2)))
        return spam[: len(spam) // 2] + text + spam[len(spam) // 2 :]
    if reason == "near_duplicate":
        return perturb(text, rng, lang)
    return text


def perturb(text: str, rng: np.random.Generator, language: str) -> str:
    """A near-duplicate: the same text with a tiny edit (punctuation, a filler, case)."""
    edit = int(rng.integers(3))
    if edit == 0:
        return text + ("!!" if language != "zh" else "！")
    if edit == 1:
        return text.replace(",", " ,", 1) if language != "zh" else text.replace("，", ",", 1)
    return (text + " thanks") if language != "zh" else (text + "谢谢")
