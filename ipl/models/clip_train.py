"""Contrastive (CLIP) training on listings: photo <-> "<category> <title>" captions.

Photos of the same group (SKU) in a batch are all positives of each other (multi-positive
InfoNCE, both directions). ``contrastive_train`` is a plain loop over in-memory tensors; the
base CLIP of ``ipl synth`` is pretrained with it on a separate synthetic corpus, and the index
stage's fine-tuning reuses it per Ray Train worker.

A model with locked towers (LiT, :func:`ipl.models.clip.lit_split`) is trained on its towers'
features: :func:`prepare_data` runs each photo through the image trunk and each caption
through the text transformer once, and the loop trains only the projections and the
temperature on those features (the towers would give the same features at every step).

Projections trained only on one marketplace's photos forget what the pretrained trunk knew:
on the demo, fine-tuning the image projection on synthetic drawings took real catalogue photos'
article-type nearest-neighbour top-1 from 0.85 (before) to 0.74 while the trunk's own features
score 0.87. ``similarity_weight`` adds a similarity-preserving term (Tung & Mori, ICCV 2019,
with the locked trunk as the teacher): the mean squared difference between the batch's
photo-photo cosine matrix in the joint space and the same matrix of the trunk's features. It
keeps the pretrained geometry wherever the contrastive loss does not need to move it, so what
transfers to photos unlike the training set is kept; the weight is chosen on the synthetic
held-out photos (the largest that does not lower their SPU top-1; README, "Perception").
"""
from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ipl.models.clip import Clip, lit_split

log = logging.getLogger("ipl.models")


@dataclass
class ContrastiveData:
    pixels: torch.Tensor  # (N, 3, H, W) preprocessed; with `features`: (N, F) frozen image features
    tokens: torch.Tensor  # (N, context) open_clip tokens; with `features`: (N, G) frozen text features
    groups: torch.Tensor  # (N,) int group id (same id = positives)
    features: bool = False  # pixels/tokens hold locked towers' features (LiT)
    families: Optional[torch.Tensor] = None  # (N,) int family id (SPU: a group's siblings), when the rows had one


def caption(category: str, title: str) -> str:
    return f"{category}: {title}"


def prepare_data(clip: Clip, rows: Iterable[dict], max_photos: int = 2, batch_size: int = 64,
                 progress=None) -> ContrastiveData:
    """Decode photos and tokenize captions once; rows need photos, category, title, sku_id.

    For a locked-tower model the result holds the towers' features instead (computed here, in
    batches, on the model's device, through the CLIP's feature cache when one is on; photos are
    decoded a batch at a time; ``progress(done, total)`` is called after each batch)."""
    photos, texts, groups, ids, families, fids = [], [], [], {}, [], {}
    for row in rows:
        text = caption(row["category"], row["title"])
        gid = ids.setdefault(row["sku_id"], len(ids))
        fid = fids.setdefault(row["spu_id"], len(fids)) if row.get("spu_id") is not None else -1 - gid
        for jpeg in row["photos"][:max_photos]:
            photos.append(jpeg)
            texts.append(text)
            groups.append(gid)
            families.append(fid)
    if not photos:
        raise ValueError("no photos to train the CLIP on")

    def decode(jpeg):
        return Image.open(io.BytesIO(jpeg)).convert("RGB")

    split = lit_split(clip.model)
    if split is None:
        pixels = torch.stack([clip.preprocess(decode(p)) for p in photos])
        return ContrastiveData(pixels, clip.tokenizer(texts), torch.tensor(groups), families=torch.tensor(families))
    img, txt, device = [], [], clip.device
    unique = list(dict.fromkeys(texts))  # photos of one listing share its caption
    with torch.inference_mode():
        for i in range(0, len(photos), batch_size):
            img.append(clip.trunk_features([decode(p) for p in photos[i : i + batch_size]], batch_size))
            if progress:
                progress(min(i + batch_size, len(photos)), len(photos))
        for i in range(0, len(unique), 256):
            txt.append(split.text_features(clip.tokenizer(unique[i : i + 256]).to(device)).float().cpu())
    text_feats = torch.cat(txt)
    where = {t: j for j, t in enumerate(unique)}
    return ContrastiveData(torch.cat(img), text_feats[torch.tensor([where[t] for t in texts])], torch.tensor(groups),
                           features=True, families=torch.tensor(families))


def _encoders(model, data: ContrastiveData):
    """(image, text) functions from the data's tensors to embeddings (the heads alone for features)."""
    if not data.features:
        return model.encode_image, model.encode_text
    split = lit_split(model)
    if split is None:
        raise ValueError("contrastive data holds tower features but the model's towers are not locked")
    return split.image_head, split.text_head


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor, scale: torch.Tensor,
                        families: Optional[torch.Tensor] = None, family_weight: float = 0.0):
    """Multi-positive InfoNCE, both directions: the captions of the photo's group are its targets;
    with ``family_weight`` the captions of its family's other groups (same SPU, another SKU) are
    targets too, each weighing that much against a group member's 1 (0: they are negatives)."""
    logits = scale * img @ txt.t()
    same = groups[:, None] == groups[None, :]
    target = same.float()
    if family_weight and families is not None:
        target = target + family_weight * ((families[:, None] == families[None, :]) & ~same).float()
    target = target / target.sum(dim=1, keepdim=True)
    return 0.5 * (-(target * F.log_softmax(logits, 1)).sum(1).mean() - (target * F.log_softmax(logits.t(), 1)).sum(1).mean())


def image_positive_loss(img: torch.Tensor, groups: torch.Tensor, scale: torch.Tensor):
    """Supervised contrastive loss among the photos: other photos of the same group are positives
    (what identical-product retrieval compares: photo with photo). Photos without a positive in
    the batch do not count."""
    logits = scale * img @ img.t()
    eye = torch.eye(len(img), dtype=torch.bool, device=img.device)
    logits = logits.masked_fill(eye, float("-inf"))
    pos = (groups[:, None] == groups[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        return logits.new_zeros(())
    logp = F.log_softmax(logits, 1).masked_fill(~pos, 0.0)
    return (-(logp.sum(1)[has] / pos.sum(1)[has])).mean()


def similarity_preserving_loss(emb: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the photo-photo cosine matrices of the (normalised) joint
    embeddings ``emb`` and of the locked trunk's features ``teacher`` (Tung & Mori 2019)."""
    t = F.normalize(teacher.float(), dim=-1)
    return ((emb @ emb.t() - t @ t.t()) ** 2).mean()


def contrastive_train(
    model,
    data: ContrastiveData,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    log_every: int = 50,
    step_hook=None,
    after_backward=None,
    image_weight: float = 0.0,
    similarity_weight: float = 0.0,
    family_weight: float = 0.0,
) -> list[float]:
    """Train ``model`` (an open_clip CLIP) for ``steps`` steps; returns the loss per step.

    ``image_weight`` adds :func:`image_positive_loss` (photo <-> photo of the same group).
    ``similarity_weight`` adds :func:`similarity_preserving_loss` against the locked trunk's
    features (LiT data only: a model trained end to end has no fixed teacher, and the term is
    left out with a warning).
    ``family_weight``: the captions of a photo's family's other groups (same SPU, another SKU) weigh
    that much as its targets (:func:`multi_positive_loss`; 0: negatives, as any other caption).
    ``after_backward(model)`` runs between ``backward`` and the optimizer step (the index
    stage's Ray Train workers average gradients there).
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device  # batches go where the model is (a GPU worker's device)
    encode_image, encode_text = _encoders(model, data)
    if similarity_weight and not data.features:
        log.warning("similarity_weight %.3g ignored: the towers are not locked, so there are no fixed trunk "
                    "features to preserve", similarity_weight)
        similarity_weight = 0.0
    model.train()
    for m in model.modules():  # locked batch norms keep their statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )
    n = len(data.groups)
    losses = []
    perm = torch.randperm(n, generator=gen)
    cursor = 0
    started = last_log = time.monotonic()
    for step in range(steps):
        if cursor + batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + batch_size]
        cursor += batch_size
        pixels = data.pixels[idx].to(device)
        img = F.normalize(encode_image(pixels), dim=-1)
        txt = F.normalize(encode_text(data.tokens[idx].to(device)), dim=-1)
        groups = data.groups[idx].to(device)
        families = data.families[idx].to(device) if data.families is not None else None
        scale = model.logit_scale.exp().clamp(max=100)
        loss = multi_positive_loss(img, txt, groups, scale, families, family_weight)
        if image_weight:
            loss = loss + image_weight * image_positive_loss(img, groups, scale)
        if similarity_weight:  # pixels hold the locked trunk's features here
            loss = loss + similarity_weight * similarity_preserving_loss(img, pixels)
        opt.zero_grad()
        loss.backward()
        if after_backward:  # e.g. average gradients across data-parallel workers
            after_backward(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step_hook:
            step_hook(step, losses[-1])
        if log_every and ((step + 1) % log_every == 0 or time.monotonic() - last_log > 15):
            last_log = time.monotonic()
            rate = (step + 1) / max(1e-9, last_log - started)
            log.info("clip contrastive step %d/%d loss %.3f (%.1f steps/s, ETA %.0fs)", step + 1, steps,
                     np.mean(losses[-log_every:]), rate, (steps - step - 1) / rate)
    model.eval()
    return losses


@torch.no_grad()
def retrieval_accuracy(clip: Clip, data: ContrastiveData, limit: Optional[int] = 512) -> float:
    """Image->text top-1 accuracy (a text of the same group counts) on up to ``limit`` samples."""
    encode_image, encode_text = _encoders(clip.model, data)
    idx = torch.arange(min(limit or len(data.groups), len(data.groups)))
    img = F.normalize(encode_image(data.pixels[idx].to(clip.device)), dim=-1)
    txt = F.normalize(encode_text(data.tokens[idx].to(clip.device)), dim=-1)
    best = (img @ txt.t()).argmax(1).cpu()
    return float((data.groups[idx][best] == data.groups[idx]).float().mean())


@torch.no_grad()
def caption_scores(clip: Clip, data: ContrastiveData, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each photo with its own caption and with a caption of another category (the
    next sample of a different category): what the image-text consistency check separates."""
    encode_image, encode_text = _encoders(clip.model, data)
    img = F.normalize(encode_image(data.pixels.to(clip.device)), dim=-1).cpu()
    txt = F.normalize(encode_text(data.tokens.to(clip.device)), dim=-1).cpu()
    n = len(categories)
    other = [next((j % n for j in range(i + 1, i + n) if categories[j % n] != categories[i]), i) for i in range(n)]
    matched = (img * txt).sum(-1).numpy()
    mismatched = (img * txt[torch.tensor(other)]).sum(-1).numpy()
    return matched, mismatched


def consistency_threshold(matched: np.ndarray, mismatched: np.ndarray) -> dict:
    """The cosine below which a photo-caption pair is called a mismatch: the middle of the range
    that best separates matched from mismatched pairs (balanced accuracy), with that accuracy."""
    cuts = np.unique(np.concatenate([matched, mismatched]))
    best, lo, hi = -1.0, float(cuts[0]), float(cuts[0])
    for t in cuts:
        acc = 0.5 * (float((matched >= t).mean()) + float((mismatched < t).mean()))
        if acc > best + 1e-9:
            best, lo, hi = acc, float(t), float(t)
        elif abs(acc - best) <= 1e-9:
            hi = float(t)
    below = cuts[cuts < lo]
    lo = float(below[-1]) if len(below) else lo  # the separating range starts just above the last lower score
    return {"threshold": round((lo + hi) / 2, 4), "balanced_accuracy": round(best, 4),
            "matched_p01": float(np.quantile(matched, 0.01)), "mismatched_p99": float(np.quantile(mismatched, 0.99)),
            "pairs": int(len(matched))}
