"""Image-text consistency with open_clip, as a Ray Data actor-pool stage.

``ClipConsistency(clip_source)`` holds the model (one per actor); ``__call__`` decodes each
row's photos, embeds them and the listing's caption ("<category>: <title or text>") and
adds ``clip_score``: the mean cosine of the photos with the caption. Rows whose photos cannot
be decoded get an ``error`` (quarantine) instead of a score. With ``feature_cache`` (a
directory) the image trunk's features are kept there for ``ipl index``
(:mod:`ipl.models.feature_cache`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ipl.data.arrow import plain_lists
from ipl.data.contract import nulls_to_none, require_columns
from ipl.models.clip import load_clip
from ipl.models.clip_train import caption
from ipl.photos import decode_photo


class ClipConsistency:
    def __init__(self, clip_source: str, max_photos: int = 3, feature_cache: Optional[str] = None):
        torch.set_num_threads(1)
        self.clip = load_clip(clip_source, feature_cache=feature_cache)  # the trunk's features, kept for ipl index
        self.max_photos = max_photos

    def __call__(self, batch: dict) -> dict:
        require_columns(batch, ["category", "text", "photos"], "image_text_consistency")
        n = len(batch["category"])
        titles = batch.get("title", [None] * n)
        errors = nulls_to_none(batch["error"]) if "error" in batch else [None] * n
        images, owners, captions = [], [], []
        for i in range(n):
            photos = batch["photos"][i]
            if photos is None or len(photos) == 0:
                errors[i] = errors[i] or "no photos"
                continue
            try:
                decoded = [decode_photo(p) for p in list(photos)[: self.max_photos]]
            except Exception as exc:
                errors[i] = errors[i] or f"unreadable photo: {type(exc).__name__}: {exc}"
                continue
            images += decoded
            owners += [i] * len(decoded)
            captions.append((i, caption(batch["category"][i], titles[i] or batch["text"][i][:120])))
        scores = np.full(n, np.nan, dtype=np.float32)
        if images:
            img = self.clip.encode_images(images)
            idx = [i for i, _ in captions]
            txt = self.clip.encode_texts([c for _, c in captions])
            row_of = {i: k for k, i in enumerate(idx)}
            sims = (img * txt[[row_of[o] for o in owners]]).sum(-1).numpy()
            owners_arr = np.array(owners)
            for i in idx:
                scores[i] = float(sims[owners_arr == i].mean())
        out = dict(batch)
        out["clip_score"] = scores
        out["error"] = errors
        return plain_lists(out)
