"""Generation with transformers (the CPU/GPU backend without vLLM), batched and greedy.

``generate_batch(vlm, requests, max_new_tokens)``: each request is ``(messages, photos)``
with ``messages`` the system + user turns (no assistant turn) and ``photos`` encoded image
bytes or PIL images. Left padding lets one ``generate`` call serve rows of different
lengths; rows with and without photos may be mixed. ``blocked`` (one list per request) are
the values the decode-time guard masks (:mod:`ipl.generate.guard`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ipl.photos import decode_photo


def generate_batch(vlm, requests: Sequence[tuple[list[dict], Sequence[Any]]], max_new_tokens: int = 128,
                   batch_size: int = 8, blocked: Optional[Sequence[Sequence[str]]] = None) -> list[str]:
    from transformers import LogitsProcessorList

    from ipl.generate.guard import ValueGuard, token_sequences

    processor, model = vlm.processor, vlm.model
    tok = processor.tokenizer
    outputs: list[str] = []
    previous = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            texts, images = [], []
            for messages, photos in chunk:
                texts.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
                images.extend(decode_photo(p) for p in photos)
            enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            rows = [token_sequences(tok, blocked[start + i]) for i in range(len(chunk))] if blocked else []
            guard = ValueGuard(rows, enc["input_ids"].shape[1]) if any(rows) else None
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     logits_processor=LogitsProcessorList([guard]) if guard else None)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = previous
    return outputs
