"""Batches for fine-tuning: chat template + processor, and the loss mask of the paper's Eq. 1.

``Collator(processor)`` turns instruction rows (``messages`` as ChatML JSON, ``photos`` as
encoded image bytes) into model inputs. Only the assistant turns count: their tokens and
the closing ``<|im_end|>`` keep their ids in ``labels``; the system and user turns (prompt
and image placeholders), the role headers and the padding are ``-100``. Rows without
photos and batches mixing rows with and without photos are handled (the processor expands
``<|image_pad|>`` per image; text-only rows simply have none).

Photos follow the image policy (:class:`ipl.config.ImagePolicy`: at most ``max_photos``, each
resized within ``min_pixels``..``max_pixels`` as serving and evaluation resize them). A row that
would exceed ``max_length`` loses photos from the end until it fits
(:func:`ipl.photos.photos_that_fit`, the rule serving uses too; counted in ``stats`` as
``photos_dropped_for_length``); a row still too long without photos is cut at the end (its
answer is shortened, counted as ``truncated``), never silently.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Optional, Sequence

import torch

from ipl.models.loss import IGNORE, answer_labels
from ipl.photos import fit_photos, photos_within


def limit_images(messages: list[dict], keep: int) -> list[dict]:
    """Drop image parts beyond the first ``keep`` (the photos list is cut the same way)."""
    out, seen = [], 0
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    seen += 1
                    if seen > keep:
                        continue
                parts.append(part)
            m = {**m, "content": parts}
        out.append(m)
    return out


class Collator:
    """Rows -> ``input_ids``, ``attention_mask``, ``labels`` (+ ``pixel_values``, ``image_grid_thw``)."""

    def __init__(self, processor, max_length: int = 1024, max_photos: Optional[int] = None, policy=None):
        from ipl.models.vlm import processor_policy, set_image_policy

        self.processor = processor
        self.tokenizer = processor.tokenizer
        policy = policy or processor_policy(processor, 2 if max_photos is None else max_photos)
        if max_photos is not None and max_photos != policy.max_photos:
            policy = policy.model_copy(update={"max_photos": max_photos})
        set_image_policy(processor, policy)
        self.policy, self.max_length, self.max_photos = policy, max_length, policy.max_photos
        tok = self.tokenizer
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        self.header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.stats: Counter = Counter()

    def texts_and_images(self, rows: Sequence[dict]) -> tuple[list[str], list[Any], list[int]]:
        """Chat-template texts, the decoded photos in order, and the photo count per row."""
        texts, images, counts = [], [], []
        for row in rows:
            messages = row["messages"]
            if isinstance(messages, str):
                messages = json.loads(messages)
            photos = fit_photos(row.get("photos") or [], self.policy)
            messages = limit_images(messages, len(photos))
            n_parts = sum(1 for m in messages if isinstance(m["content"], list)
                          for p in m["content"] if p.get("type") == "image")
            if n_parts != len(photos):
                raise ValueError(f"row {row.get('id', '?')}: {n_parts} image placeholders but {len(photos)} photos")
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            if photos:  # the context rule: photos go from the end until text + photos fit
                keep = photos_within(self.tokenizer, text, photos, self.max_length)
                if keep < len(photos):
                    self.stats["photos_dropped_for_length"] += len(photos) - keep
                    photos = photos[:keep]
                    text = self.tokenizer.apply_chat_template(limit_images(messages, keep), tokenize=False)
            texts.append(text)
            images.extend(photos)
            counts.append(len(photos))
        return texts, images, counts

    def label_mask(self, ids: list[int]) -> list[int]:
        return answer_labels(ids, self.im_start, self.im_end, self.header)

    def __call__(self, rows: Sequence[dict]) -> Optional[dict]:
        texts, images, counts = self.texts_and_images(rows)
        enc = self.processor(text=texts, images=images or None, return_tensors=None, padding=False)
        ids_list = enc["input_ids"]
        keep, cut = [], []
        for k, ids in enumerate(ids_list):
            if len(ids) <= self.max_length:
                keep.append(k)
            elif self.image_pad in ids[self.max_length:]:  # photos_that_fit should have prevented it
                self.stats["dropped_too_long"] += 1
            else:
                keep.append(k)
                cut.append(k)
        self.stats["truncated"] += len(cut)
        self.stats["rows"] += len(keep)
        if not keep:
            return None
        # pixel rows per image = t*h*w of its grid; pick the images of the kept rows
        batch_pixels, batch_grids = [], []
        if images:
            grids = torch.as_tensor(enc["image_grid_thw"])
            pixels = torch.as_tensor(enc["pixel_values"])
            offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), grids.prod(-1)]), 0)
            img = 0
            for k, n_img in enumerate(counts):
                if k in keep:
                    for m in range(img, img + n_img):
                        batch_pixels.append(pixels[offsets[m] : offsets[m + 1]])
                        batch_grids.append(grids[m])
                img += n_img
        seqs = [ids_list[k][: self.max_length] for k in keep]
        types = enc.get("mm_token_type_ids")  # image/video token positions for M-RoPE
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        mm_types = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, (k, s) in enumerate(zip(keep, seqs)):
            input_ids[r, : len(s)] = torch.tensor(s)
            attention[r, : len(s)] = 1
            labels[r, : len(s)] = torch.tensor(self.label_mask(s))
            if types is not None:
                mm_types[r, : len(s)] = torch.tensor(types[k][: len(s)])
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if types is not None:
            out["mm_token_type_ids"] = mm_types
        if batch_pixels:
            out["pixel_values"] = torch.cat(batch_pixels)
            out["image_grid_thw"] = torch.stack(batch_grids)
        return out
