"""Generic pretraining of the tiny VLM's language model: restating the facts in its prompt.

A real Qwen2-VL-7B arrives able to copy a value it is given in its prompt; that is what makes
the paper's reference attributes work. The tiny randomly initialised stand-in does not have
that skill, and the demo's fine-tuning budget (minutes on 2 CPU cores) is too short for it to
appear: fine-tuned from random weights, the tiny model's attribute recall with the reference
was barely above its recall without it.

``pretrain_copy`` gives the stand-in that skill before ``ipl train`` sees it, the way a real
base model got it from pretraining: chat turns whose user message holds a ``<reference>``
JSON of random facts and whose answer restates them in order. The facts are generic: random
keys with random values drawn from the catalogue's whole vocabulary (every category, far
more brands and models than a synthetic marketplace uses), so the only way to lower the
loss is to copy. No listing of the marketplace is used; the vision
tower is not touched (text-only turns).
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ipl.models.loss import answer_labels, target_loss

log = logging.getLogger("ipl.models")

SEPARATORS = (", ", ", ", "; ")
ASK = {
    "en": ("Here are some facts: <reference>{facts}</reference> Restate them.",
           "Restate these facts in order. <reference>{facts}</reference>"),
    "zh": ("以下是一些信息：<reference>{facts}</reference> 请复述。",
           "按顺序复述这些信息。<reference>{facts}</reference>"),
}


@dataclass
class Vocabulary:
    """What the generic facts are drawn from: keys and values in English and Chinese."""

    keys: dict[str, list[str]]
    values: dict[str, list[str]]

    @classmethod
    def build(cls) -> "Vocabulary":
        from ipl.catalog.catalogue import Catalogue

        cat = Catalogue.build(brands_per_category=99, models_per_brand=99)
        keys = {"en": set(), "zh": set()}
        values = {"en": set(), "zh": set()}
        for c in cat.categories.values():
            for k in c.template:
                keys["en"].add(k)
                keys["zh"].add(cat.key_name(k, "zh"))
            for brand, models in c.brands:
                values["en"].add(brand.en)
                values["zh"].add(brand.zh)
                values["en"].update(models)
                values["zh"].update(models)
            for v in c.variant_values:
                values["en"].add(v.en)
                values["zh"].add(v.zh)
            for vs in c.listing.values():
                for v in vs:
                    values["en"].add(v.en)
                    values["zh"].add(v.zh)
        for name, spec in cat.colors.items():
            values["en"].add(name)
            values["zh"].add(spec["zh"])
        return cls({k: sorted(v) for k, v in keys.items()}, {k: sorted(v) for k, v in values.items()})


def copy_sample(vocab: Vocabulary, rng: random.Random, max_facts: int = 4) -> tuple[list[dict], list[str]]:
    """One conversation (user with a <reference> JSON, assistant) and the values it states."""
    lang = "zh" if rng.random() < 0.1 else "en"
    keys = rng.sample(vocab.keys[lang], rng.randint(2, max_facts))
    facts = {k: rng.choice(vocab.values[lang]) for k in keys}
    parts = []
    for k, v in facts.items():
        style = rng.random()
        parts.append(f"{k} {v}" if style < 0.15 else v)
    sep = rng.choice(SEPARATORS) if lang == "en" else "，"
    answer = sep.join(parts) + ("." if lang == "en" else "。")
    user = rng.choice(ASK[lang]).format(facts=json.dumps(facts, ensure_ascii=False))
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return messages, list(facts.values())


class CopyBatches:
    """Tokenised copy conversations, labelled as fine-tuning labels them (``answer_labels``: the
    answer and its ``<|im_end|>`` count, the rest is -100)."""

    def __init__(self, tokenizer, vocab: Vocabulary, seed: int):
        self.tokenizer, self.vocab = tokenizer, vocab
        self.rng = random.Random(seed)
        self.pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)

    def prompt(self, messages: list[dict]) -> list[int]:
        """The tokens a model answers from: every turn but the last, then the generation prompt."""
        text = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def __call__(self, n: int) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        seqs = [tok.encode(tok.apply_chat_template(copy_sample(self.vocab, self.rng)[0], tokenize=False),
                           add_special_tokens=False) for _ in range(n)]
        width = max(len(s) for s in seqs)
        ids = torch.full((n, width), self.pad)
        labels = torch.full((n, width), -100)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            labels[i, :len(s)] = torch.tensor(answer_labels(s, self.im_start, self.im_end, self.header))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def copy_recall(model, tokenizer, vocab: Vocabulary, rows: int = 40, seed: int = 12345) -> float:
    """Share of the facts a greedy answer states, on ``rows`` fresh conversations."""
    was_training = model.training
    model.eval()
    batches = CopyBatches(tokenizer, vocab, seed)
    found = total = 0
    for _ in range(rows):
        messages, values = copy_sample(vocab, batches.rng)
        prompt = batches.prompt(messages)
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False)
        text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
        found += sum(v in text for v in values)
        total += len(values)
    model.train(was_training)
    return found / max(total, 1)


def pretrain_copy(model, tokenizer, steps: int, batch_size: int, lr: float, seed: int = 0,
                  eval_rows: int = 40, progress: Optional[Callable[[str], None]] = None,
                  on_step: Optional[Callable[[], None]] = None) -> dict:
    """Train ``model``'s language model on generic copy conversations; returns the numbers.

    AdamW (betas 0.9/0.98, eps 1e-6, no weight decay), 5% warmup then cosine, clipping at 1.0.
    Only parameters that receive gradients move (text turns never reach the vision tower)."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build()
    batches = CopyBatches(tokenizer, vocab, seed)
    before = copy_recall(model, tokenizer, vocab, eval_rows)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses: list[float] = []
    start = last = time.time()
    for step in range(1, steps + 1):
        if on_step is not None:  # e.g. take more threads once the CPU is free
            on_step()
        loss, _ = target_loss(model, batches(batch_size))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
        if progress and (time.time() - last >= 10 or step == steps):  # a line every 10 s, however slow the steps
            last = time.time()
            rate = step / (last - start)
            progress(f"tiny VLM copy pretraining: step {step}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                     f"ETA {(steps - step) / rate:.0f}s")
    model.eval()
    after = copy_recall(model, tokenizer, vocab, eval_rows)
    tail = losses[-20:]
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "loss_first": losses[0] if losses else None,
            "loss_last": sum(tail) / len(tail) if tail else None, "copy_recall_before": before,
            "copy_recall_after": after, "seconds": round(time.time() - start, 1)}
