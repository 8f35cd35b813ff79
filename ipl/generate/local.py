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

    from ipl.generate.guard import ValueGuard, shared_sequences

    model, tok = vlm.model, vlm.processor.tokenizer
    outputs: list[str] = []
    sequences = shared_sequences(tok)
    for start, chunk, enc in encoded_batches(vlm, requests, batch_size):
        rows = [sequences(blocked[start + i]) for i in range(len(chunk))] if blocked else []
        guard = ValueGuard(rows, enc["input_ids"].shape[1]) if any(rows) else None
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 logits_processor=LogitsProcessorList([guard]) if guard else None)
        new = out[:, enc["input_ids"].shape[1]:]
        outputs.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
    return outputs


def encoded_batches(vlm, requests: Sequence[tuple[list[dict], Sequence[Any]]], batch_size: int):
    """(start, chunk, model inputs) per batch of requests: chat template with the generation
    prompt, photos decoded, left-padded (the tokenizer's padding side restored afterwards)."""
    processor, model = vlm.processor, vlm.model
    tok = processor.tokenizer
    previous = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(requests), batch_size):
            chunk = requests[start: start + batch_size]
            texts, images = [], []
            for messages, photos in chunk:
                texts.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
                images.extend(decode_photo(p) for p in photos)
            enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            yield start, chunk, {k: v.to(model.device) for k, v in enc.items()}
    finally:
        tok.padding_side = previous


def choose_batch(vlm, requests: Sequence[tuple[list[dict], Sequence[Any]]], choices: Sequence[str] = ("yes", "no"),
                 batch_size: int = 8) -> list[tuple[str, float]]:
    """A closed-set answer per request: the choice whose first token the model ranks highest as
    the reply's first token (constrained decoding, as vLLM's ``guided_choice``), with its
    probability renormalised over the choices. Each choice's spellings (``yes``, ``Yes``) pool."""
    model, tok = vlm.model, vlm.processor.tokenizer
    spellings = []
    for c in choices:
        ids = {tok.encode(form, add_special_tokens=False)[0] for form in (c, c.capitalize(), " " + c)
               if tok.encode(form, add_special_tokens=False)}
        if not ids:
            raise ValueError(f"choice {c!r} has no token in this tokenizer")
        spellings.append(sorted(ids))
    if len({i for ids in spellings for i in ids}) != sum(len(ids) for ids in spellings):
        raise ValueError(f"choices {list(choices)} share a first token: they cannot be told apart")
    out: list[tuple[str, float]] = []
    for _, _, enc in encoded_batches(vlm, requests, batch_size):
        with torch.no_grad():
            logits = model(**enc).logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        mass = torch.stack([probs[:, ids].sum(dim=-1) for ids in spellings], dim=-1)
        mass = mass / mass.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        for row in mass.tolist():
            best = max(range(len(choices)), key=lambda j: row[j])
            out.append((choices[best], float(row[best])))
    return out
