"""The language-modelling loss of the paper's Eq. 1, computed only where there is a target.

Fine-tuning and the tiny VLM's copy pretraining score the assistant answers alone
(:func:`answer_labels`): in the demo's instruction batches about 10 % of the positions carry a
target, the rest being the system and user turns, image placeholders and padding. A causal LM
asked for its loss through ``labels`` still projects *every* position onto the vocabulary
(``lm_head``, then a float32 copy of the logits): for the tiny model that is a third of its
matrix work, for a 7B Qwen2-VL (152k-token vocabulary) a float32 logits tensor of
``batch x length x 152k`` (about 10 GB for 8 x 2,048 tokens) that the loss mostly ignores.

:func:`target_loss` asks the model for logits only at the positions where some row of the batch
has a target (transformers' ``logits_to_keep``, a public argument of its causal LMs that the
forward applies before ``lm_head``; through a DeepSpeed engine it is a keyword argument like the
others, so every ZeRO stage runs it inside the module's forward), then takes the same mean
cross-entropy over the targets as transformers' ``ForCausalLMLoss`` (float32 logits,
``ignore_index`` -100, mean over the target tokens). Same value, same gradients; a unit test
compares it with the model's own loss.
"""
from __future__ import annotations

from typing import Any

import torch

IGNORE = -100


def answer_labels(ids: list[int], im_start: int, im_end: int, header: list[int]) -> list[int]:
    """Labels for one sequence: assistant answers and their ``<|im_end|>``; the rest -100.

    ``header`` is the tokenised ``<|im_start|>assistant\n`` that opens an assistant turn."""
    labels = [IGNORE] * len(ids)
    h, i = len(header), 0
    while i < len(ids):
        if ids[i] == im_start and ids[i : i + h] == header:
            j = i + h
            while j < len(ids) and ids[j] != im_end:
                labels[j] = ids[j]
                j += 1
            if j < len(ids):
                labels[j] = ids[j]  # the closing <|im_end|> is a target too
            i = j + 1
        else:
            i += 1
    return labels


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions (of the logits) that predict a target in some row: ``j`` where ``labels[:, j + 1]``
    is not -100, as a 1-D index tensor on ``labels``' device."""
    return (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)


def target_loss(model: Any, inputs: dict) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the target tokens of ``inputs`` (which hold ``labels``)
    and their number, with logits computed only at :func:`target_positions`.

    ``model`` is a transformers causal LM (or a DeepSpeed engine around one) whose forward takes
    ``logits_to_keep``. A batch without any target gives NaN, as the model's own loss does."""
    labels = inputs["labels"]
    keep = target_positions(labels)
    targets = labels[:, 1:][:, keep]
    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
    logits = out.logits  # batch x len(keep) x vocabulary
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE)
    return loss, int((targets != IGNORE).sum())
