"""Privacy (PII) detection and masking for listing text (paper Appendix A.1 heuristics).

Finds phone numbers (Chinese mobiles ``1[3-9]x xxxx xxxx`` with any separators, +86, and
other international numbers), WeChat/VX/QQ ids *with their context words* (``VX: abc123``,
``加微信 abc123``, ``薇信``), e-mail addresses, URLs and other platforms' names. Text is
NFKC-normalised first, so full-width digits are caught. ``find_pii`` returns the hits;
``mask_pii`` replaces them with ``[PHONE]``, ``[WECHAT]``, ``[EMAIL]``, ``[URL]``, ``[PLATFORM]``.

False positives matter as much as misses: storage sizes (``256GB``), model numbers
(``WH-1000XM4``), sizes (``EU 42``), prices and battery percentages are not numbers to
mask, so phone patterns need 11+ digits in a phone-like shape.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ipl.text.normalize import normalize

KINDS = ("phone", "wechat", "email", "url", "platform")

# dots separate phone groups only in the fixed shapes below ("555.123.4567", "138.1234.5678"):
# free runs of dotted numbers are years, versions and lists ("1902.1903.1905.1907." on Mercari)
_SEP = r"[\s\-()]{0,2}"
_DSEP = r"[\s\-.()]{0,2}"
_CN_MOBILE = re.compile(r"(?<![A-Za-z0-9.])(?:\+?86" + _DSEP + r")?1[3-9]\d" + _DSEP + r"\d{4}" + _DSEP + r"\d{4}"
                        r"(?![A-Za-z0-9]|\.\d)")
_INTL = re.compile(r"(?<![A-Za-z0-9])\+\d{1,3}" + _DSEP + r"(?:\(?\d{2,4}\)?" + _DSEP + r"){2,4}\d{2,4}(?![A-Za-z0-9])")
_US_DOTTED = re.compile(r"(?<![A-Za-z0-9.])\(?\d{3}\)?\.\d{3}\.\d{4}(?![A-Za-z0-9]|\.\d)")
_LONG_DIGITS = re.compile(r"(?<![A-Za-z0-9.])(?:\d" + _SEP + r"){9,14}\d(?![A-Za-z0-9]|\.\d)")
# device identifiers are not contact details: a bare run of 15+ digits (IMEI) or digits after imei/serial/s/n
_DEVICE_ID = re.compile(r"(?:imei|meid|serial|s/n|sn)\s*(?:no\.?|number|#)?\s*[:：]?\s*$", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|www\.)[^\s，。,]+|\b[\w-]+\.(?:com|cn|net|org|shop|io|ly|me)(?:/[^\s，。,]*)?\b", re.I)
_WECHAT_CONTEXT = r"(?:wechat|weixin|\bwx|\bvx|v信|微信|威信|薇信|徽信|加微|加v|\bqq\b|扣扣)\s*(?:id|号)?\s*[:：]?"
# a bare "v" is a WeChat marker only with a colon ("v: abc123"), not in "deep v sweater"
_WECHAT = re.compile(r"(?:" + _WECHAT_CONTEXT + r"|\bv\s*[:：])\s*([a-zA-Z][\w-]{4,19}|\d{5,12})", re.I)
_PLATFORMS = [
    "taobao", "淘宝", "tmall", "天猫", "pinduoduo", "拼多多", "jd.com", "京东", "douyin", "抖音", "ebay",
    "instagram", "facebook marketplace", "craigslist", "depop", "poshmark", "转转", "小红书", "xiaohongshu",
]
_PLATFORM = re.compile("|".join(re.escape(p) for p in _PLATFORMS), re.I)


@dataclass(frozen=True)
class Hit:
    kind: str
    start: int
    end: int
    text: str


def _spans(pattern: re.Pattern, kind: str, text: str, group: int = 0) -> list[Hit]:
    out = []
    for m in pattern.finditer(text):
        start, end = (m.start(0), m.end(0))
        out.append(Hit(kind, start, end, m.group(0)))
    return out


def _digits(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _device_id(text: str, hit: Hit) -> bool:
    bare = hit.text.strip()
    if bare.isdigit() and len(bare) >= 15:
        return True
    return bool(_DEVICE_ID.search(text[max(0, hit.start - 16):hit.start]))


def find_pii(text: str, platforms: bool = True) -> list[Hit]:
    """PII hits in the NFKC-normalised ``text`` (offsets refer to the normalised text)."""
    t = normalize(text)
    hits: list[Hit] = []
    hits += _spans(_EMAIL, "email", t)
    hits += [h for h in _spans(_URL, "url", t) if not any(e.start <= h.start < e.end for e in hits)]
    hits += _spans(_WECHAT, "wechat", t)
    for pat in (_CN_MOBILE, _INTL, _US_DOTTED, _LONG_DIGITS):
        for h in _spans(pat, "phone", t):
            if _digits(h.text) >= 10 and not any(o.start <= h.start < o.end for o in hits) and not _device_id(t, h):
                hits.append(Hit("phone", h.start, h.end, h.text))
    if platforms:
        hits += [h for h in _spans(_PLATFORM, "platform", t) if not any(o.start <= h.start < o.end for o in hits)]
    return sorted(hits, key=lambda h: h.start)


def mask_pii(text: str, platforms: bool = True) -> str:
    """``text`` (normalised) with every PII hit replaced by its ``[KIND]`` tag."""
    t = normalize(text)
    out, last = [], 0
    for h in find_pii(t, platforms):
        if h.start < last:
            continue
        out.append(t[last : h.start])
        out.append(f"[{h.kind.upper()}]")
        last = h.end
    out.append(t[last:])
    return "".join(out)
