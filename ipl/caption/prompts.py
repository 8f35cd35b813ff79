"""The caption task (CASLIE's EC³): a context-conditioned caption of what the photos show.

``caption_prompt(category, keys, language)`` carries the task context into the prompt, as EC³
does: what the caption is for (identifying the product's attribute values of the category's
template) and the predicted category, and asks for a short factual caption of what is
*visible* — product type, brand or logo text when legible, colour, visible condition — in at
most ``MAX_WORDS`` words. Nothing is guessed: a value that cannot be seen is left out.

``caption_target(category, values, visible_keys, language)`` writes the training target from
the listing's values of the keys a photo can show (``visible_keys``: on the synthetic
marketplace the shape, the brand's logo text, the model's text and the colour are drawn;
storage, size or condition are not): "A navy phone. Logo text: Huawei. Model text: Mate 40." A
key without a value is left out, never filled.

``cqe_prompt(caption, category, language)`` is the yes/no question CASLIE's CQE asks each
judge LLM: will the information in this caption help to describe the item correctly?
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

from ipl.text.normalize import has_cjk

MAX_WORDS = 50
VISIBLE_KEYS = ("Color", "Brand", "Model")
_EN = {"color": "{v}", "colour": "{v}", "brand": "Logo text: {v}.", "model": "Model text: {v}."}
_ZH = {"color": "{v}", "colour": "{v}", "brand": "标志文字：{v}。", "model": "型号文字：{v}。"}


def caption_keys(template: Sequence[str], visible: Sequence[str] = VISIBLE_KEYS) -> list[str]:
    """The template's keys a caption is asked about: those a photo can show, in template order."""
    wanted = {k.lower() for k in visible}
    return [k for k in template if str(k).lower() in wanted]


def caption_prompt(category: Optional[str] = None, keys: Sequence[str] = (), language: str = "en") -> str:
    keys = [k for k in keys if k]
    if language == "zh":
        parts = ["请为这些商品照片写一句简短、客观的说明（不超过50字），只写照片里看得见的内容：商品类型、"
                 "清晰可辨的品牌或标志文字、颜色、可见的成色。看不清的不要猜。"]
        if category:
            parts.append(f"预测的类目：{category}。")
        if keys:
            parts.append(f"这段说明用于确认商品的：{'、'.join(keys)}。")
        return "".join(parts)
    parts = [f"Write a short factual caption (at most {MAX_WORDS} words) of what is visible in these photos: "
             "the product type, brand or logo text when legible, colour, visible condition. Do not guess what "
             "cannot be seen."]
    if category:
        parts.append(f"The predicted category is {category}.")
    if keys:
        parts.append(f"The caption should help identify the item's {', '.join(keys)}.")
    return " ".join(parts)


def caption_target(category: str, values: Mapping[str, object], visible_keys: Sequence[str] = VISIBLE_KEYS,
                   language: str = "en") -> str:
    """The caption a photo of this item supports: the category and the visible keys' values."""
    lower = {str(k).lower(): str(v).strip() for k, v in values.items() if v is not None and str(v).strip()}
    visible = [k.lower() for k in visible_keys]
    colour = next((lower[k] for k in visible if k in ("color", "colour") and k in lower), None)
    forms = _ZH if language == "zh" else _EN
    rest = []
    for key in visible:
        if key in ("color", "colour") or key not in lower:
            continue
        pattern = forms.get(key, "{k}: {v}." if language != "zh" else "{k}：{v}。")
        rest.append(pattern.format(k=key.capitalize(), v=lower[key]))
    if language == "zh":
        head = f"{colour}的{category}。" if colour else f"{category}。"
        return head + "".join(rest)
    if colour:
        head = f"{'An' if colour[:1].lower() in 'aeiou' else 'A'} {colour.lower()} {category}."
    else:
        head = f"{category[:1].upper()}{category[1:]}."
    return " ".join([head, *rest])


def caption_messages(n_images: int, prompt: str, language: str = "en", answer: Optional[str] = None) -> list[dict]:
    """The caption conversation: the description task's system turn, the photos and the prompt."""
    from ipl.generate.prompts import system_prompt

    msgs = [{"role": "system", "content": system_prompt(language)},
            {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def clean_caption(text: str) -> str:
    """A generated caption as one line of at most ``MAX_WORDS`` words; Chinese, written without
    spaces, at most twice as many characters (the prompt asks for 50)."""
    text = " ".join(str(text or "").split())
    words = text.split(" ")
    if len(words) > MAX_WORDS:
        text = " ".join(words[:MAX_WORDS])
    if has_cjk(text):
        text = text[: 2 * MAX_WORDS]
    return text.strip()


def cqe_prompt(caption: str, category: Optional[str] = None, language: str = "en") -> str:
    caption = re.sub(r"[<>]", " ", clean_caption(caption))
    if language == "zh":
        what = f"一件{category}" if category else "这件商品"
        return (f"下面是根据{what}的照片写的说明：<caption>{caption}</caption>。这段说明里的信息能帮助正确描述这件商品"
                "（品牌、型号、颜色）吗？只回答“是”或“否”。")
    what = f"the {category}" if category else "the item"
    return (f"Here is a caption written from the photos of {what}: <caption>{caption}</caption>. Will the "
            "information in this caption help to describe the item correctly (its brand, model, colour)? "
            "Answer yes or no.")


_YES = re.compile(r"^\W*(yes|y|true|是|对|会|能)\b", re.I)
_NO = re.compile(r"^\W*(no|n|false|否|不)", re.I)


def parse_yes_no(answer: str) -> Optional[bool]:
    """True / False from a yes/no reply's first word; None when it is neither."""
    a = str(answer or "").strip()
    if _NO.match(a):
        return False
    if _YES.match(a) or a[:1] in ("是", "对", "会", "能"):
        return True
    return None
