"""The description prompt (paper Table 2), shared by instruction data and serving.

``description_prompt(category, template, reference, language)`` writes the user turn:

* no category (Appendix D fallback): photos only;
* category + template: "The item is a phone. Mention where you can tell: Brand, Model, ...";
* + reference attributes: the values extracted from identical/similar listings, as JSON
  inside ``<reference>`` tags (retrieved text is untrusted: only the validated, grounded
  values are passed, never the raw descriptions).

``SYSTEM_PROMPT`` is the system turn of every description conversation.
"""
from __future__ import annotations

import json
from typing import Optional

SYSTEM_PROMPT = "You are a seller on a second-hand marketplace writing listings for your own items."
SYSTEM_PROMPT_ZH = "你是二手交易平台上的卖家，为自己的闲置物品撰写商品描述。"


def system_prompt(language: str = "en") -> str:
    return SYSTEM_PROMPT_ZH if language == "zh" else SYSTEM_PROMPT


def description_prompt(
    category: Optional[str] = None,
    template: Optional[list[str]] = None,
    reference: Optional[dict[str, str]] = None,
    language: str = "en",
) -> str:
    if language == "zh":
        parts = ["这是我要出售的闲置物品的照片。请用二手卖家的口吻写一段简短的商品描述。"]
        if category:
            parts.append(f"商品类目：{category}。")
            if template:
                parts.append("能看出来的话按顺序写明：" + "、".join(template) + "。")
        if reference:
            parts.append("同款商品的参考属性（可能不完整，只采用与照片相符的）：<reference>"
                         + json.dumps(reference, ensure_ascii=False) + "</reference>")
        return "".join(parts)
    parts = ["Here are photos of an item I'm selling second-hand. Write a short listing description in a casual seller's voice."]
    if category:
        parts.append(f"The item is a {category}.")
        if template:
            parts.append("Mention, in this order where you can tell: " + ", ".join(template) + ".")
    if reference:
        parts.append("Reference attributes from listings of the identical product (may be incomplete; use only those "
                     "that match the photos): <reference>" + json.dumps(reference, ensure_ascii=False) + "</reference>")
    return " ".join(parts)


def description_messages(n_images: int, prompt: str, language: str = "en", answer: Optional[str] = None) -> list[dict]:
    """Qwen2-VL chat messages: system, user (images then text), optionally the assistant answer."""
    msgs = [
        {"role": "system", "content": system_prompt(language)},
        {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]},
    ]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs
