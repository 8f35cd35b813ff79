"""Category prediction from image embeddings: a trained linear head, with a zero-shot fallback.

``train_head(vectors, labels, ...)`` fits a linear softmax classifier on L2-normalised
embeddings (a small torch loop; the index stage runs it as a Ray task) and returns it with
its accuracy history. ``save_head``/``load_head`` use ``<run>/models/category/``
(``head.safetensors`` + ``labels.json``, which also names the encoder fingerprint, so a head
is never used on vectors of another encoder). ``CategoryPredictor`` returns the top-k
categories with scores from the head, or zero-shot from the category names through the
open_clip text tower when there is no head (or it belongs to another encoder).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ipl.runtime import write_json_atomic

log = logging.getLogger("ipl.index")
HEAD_FILE = "head.safetensors"
LABELS_FILE = "labels.json"


def train_head(vectors: np.ndarray, labels: Sequence[str], epochs: int = 60, lr: float = 1e-2,
               weight_decay: float = 1e-4, batch_size: int = 512, seed: int = 0) -> dict:
    """Fit W, b on (vectors, labels); returns {"classes", "weight", "bias", "train_accuracy", "trained"}
    (``trained``: how many vectors it learned from)."""
    if len(vectors) != len(labels) or len(vectors) == 0:
        raise ValueError(f"category head: {len(vectors)} vectors and {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"category head needs at least 2 categories, the data has {classes}")
    torch.manual_seed(seed)
    x = torch.from_numpy(np.array(vectors, dtype=np.float32))  # a writable copy (Ray hands read-only arrays)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels])
    head = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    # a fixed logit scale: cosine-sized inputs need large logits to be confident
    scale = 10.0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = torch.nn.functional.cross_entropy(head(x[idx] * scale), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((head(x * scale).argmax(1) == y).float().mean())
    return {"classes": classes, "weight": (head.weight.detach() * scale).numpy(), "bias": head.bias.detach().numpy(),
            "train_accuracy": acc, "trained": int(len(x))}


def sku_groups(query_skus: Sequence[str], folds: int) -> dict[str, int]:
    """The held-out SKUs split into ``folds`` groups (sorted, round robin): each group is predicted by
    heads fitted without any listing of its SKUs (:func:`crossfit_categories`, the product heads)."""
    return {s: i % folds for i, s in enumerate(sorted({str(s) for s in query_skus}))}


def sku_folds(listing_skus: Sequence[str], query_skus: Sequence[str], folds: int):
    """Per :func:`sku_groups` group with queries: (the group's query rows, a mask of the listings not
    of its SKUs), what each cross-fitted head is fitted on and asked about."""
    group = sku_groups(query_skus, folds)
    listing = [str(s) for s in listing_skus]
    for g in range(folds):
        rows = [i for i, s in enumerate(query_skus) if group[str(s)] == g]
        if rows:
            held = {s for s, x in group.items() if x == g}
            yield rows, np.array([s not in held for s in listing], dtype=bool)


def crossfit_categories(vectors: np.ndarray, labels: Sequence[str], skus: Sequence[str], queries: np.ndarray,
                        query_skus: Sequence[str], epochs: int = 60, lr: float = 1e-2, weight_decay: float = 1e-4,
                        seed: int = 0, folds: int = 2) -> list[tuple[str, float]]:
    """Each query's top category and score from a head fitted on the listings (``vectors`` with
    their ``labels`` and ``skus``) **without** the query's SKU (one head per :func:`sku_groups`
    group): what the served head, fitted on every listing, gives a photo of a product variant no
    seller listed before. The calibration reads these, not the served head's answers for SKUs it
    learned from (found over-confident: on new SKUs more photos fell under its threshold)."""
    vectors, queries = np.asarray(vectors, np.float32), np.atleast_2d(np.asarray(queries, np.float32))
    labels = np.asarray(labels, dtype=object)
    out: list[Optional[tuple[str, float]]] = [None] * len(queries)
    for rows, keep in sku_folds(skus, query_skus, folds):
        head = train_head(vectors[keep], labels[keep].tolist(), epochs, lr, weight_decay, seed=seed)
        probs = softmax(queries[rows] @ head["weight"].T + head["bias"])
        for i, p in zip(rows, probs):
            out[i] = (head["classes"][int(p.argmax())], float(p.max()))
    return out  # type: ignore[return-value]


def save_head(head: dict, out_dir: Path, encoder_fingerprint: Optional[str], head_file: str = HEAD_FILE,
              labels_file: str = LABELS_FILE, **meta) -> None:
    """``head`` (weight, bias, classes) as safetensors + a labels JSON (with ``meta``)."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": np.ascontiguousarray(head["weight"], np.float32),
               "bias": np.ascontiguousarray(head["bias"], np.float32)}, str(out_dir / head_file))
    write_json_atomic(out_dir / labels_file, {"classes": head["classes"], "encoder": encoder_fingerprint,
                                              "train_accuracy": head.get("train_accuracy"),
                                              "trained": head.get("trained"), **meta})


def load_head(head_dir: Path, head_file: str = HEAD_FILE, labels_file: str = LABELS_FILE) -> Optional[dict]:
    from safetensors.numpy import load_file

    if not (head_dir / head_file).is_file() or not (head_dir / labels_file).is_file():
        return None
    meta = json.loads((head_dir / labels_file).read_text(encoding="utf-8"))
    tensors = load_file(str(head_dir / head_file))
    if tensors["weight"].shape[0] != len(meta["classes"]):
        raise ValueError(f"{head_dir}: {tensors['weight'].shape[0]} head rows for {len(meta['classes'])} classes")
    return {**meta, "weight": tensors["weight"], "bias": tensors["bias"]}


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class CategoryPredictor:
    """Top-k categories of image embeddings; ``source`` says 'head' or 'zero_shot'."""

    def __init__(self, clip, head: Optional[dict] = None, categories: Optional[Sequence[str]] = None,
                 prompt: str = "a photo of {category}"):
        self.clip = clip
        known = list(head["classes"]) if head else []
        if head is not None and head.get("encoder") not in (None, clip.fingerprint):
            log.warning("category head was trained on encoder %s, the loaded one is %s: using zero-shot",
                        head.get("encoder"), clip.fingerprint)
            head = None
        self.head = head
        names = known or list(categories or [])
        if not names:
            raise ValueError("category predictor: no trained head and no category names for zero-shot")
        self.categories = names
        self.source = "head" if head else "zero_shot"
        self._text = None
        if head is None:
            prompts = [prompt.format(category=c.replace("_", " ")) for c in names]
            self._text = clip.encode_texts(prompts).numpy()

    @classmethod
    def load(cls, clip, head_dir: Optional[Path], categories: Optional[Sequence[str]] = None,
             prompt: str = "a photo of {category}") -> "CategoryPredictor":
        head = load_head(Path(head_dir)) if head_dir else None
        return cls(clip, head, categories, prompt)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        v = np.atleast_2d(np.asarray(vectors, np.float32))
        if self.head is not None:
            return softmax(v @ self.head["weight"].T + self.head["bias"])
        return softmax(self.clip.logit_scale * v @ self._text.T)

    def predict(self, vectors: np.ndarray, k: int = 3) -> list[list[dict]]:
        probs = self.probabilities(vectors)
        top = np.argsort(-probs, axis=1)[:, :k]
        return [[{"category": self.categories[j], "score": float(p[j])} for j in row] for row, p in zip(top, probs)]
