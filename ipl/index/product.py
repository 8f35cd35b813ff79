"""Product heads: the ``photo`` basis of the evidence model for product-level keys (brand, model).

Retrieval states a product value when the listings nearest to the photos agree on it. A photo
of a new colour of a known model often finds other products of that colour first, so the
agreement is weak where the product itself is recognisable. A product head is a linear
softmax classifier per category and product-level key (``Brand`` and ``Model`` of ``phone``,
...) on the same listing embedding the index holds (:func:`ipl.index.category.train_head`, the
category head's trainer), fitted on the indexed listings' own extracted values; serving runs
it on the vector it already computed for the search (no extra encoder pass).

**Calibration without the query's product variant.** A head fitted on every indexed listing
has seen the held-out query's own SKU (its other listings are indexed), which a seller's new
colour of a model has not. So the predictions the calibration reads (tier ``photo:product``
and its per-key tiers, :mod:`ipl.evidence.fit`) come from heads **cross-fitted by SKU**: the
held-out SKUs are split into ``FOLDS`` groups, and each group's queries are predicted by heads
fitted without any listing of that group's SKUs. The served heads are fitted on everything, so
they are at least as good as the calibration measured.

Saved inside the index version it was calibrated with (``product-heads.safetensors`` +
``product-heads.json``, checksummed by the manifest), so a rollback brings back the heads and
their calibration together.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ipl.index.calibration import key_values
from ipl.index.category import sku_folds, softmax, train_head
from ipl.runtime import write_json_atomic

log = logging.getLogger(__name__)

HEAD_FILE, LABELS_FILE = "product-heads.safetensors", "product-heads.json"
FOLDS = 2
MIN_LISTINGS = 20  # a (category, key) needs this many labelled listings and 2 values for a head


def train_heads(vectors: np.ndarray, categories: Sequence[str], extracted: Sequence, keys: Sequence[str],
                epochs: int, lr: float, weight_decay: float, seed: int = 0,
                min_listings: int = MIN_LISTINGS) -> list[dict]:
    """One head per (category, key) with ``min_listings`` labelled listings and 2+ values: each
    ``{"category", "key", "classes", "weight", "bias", "trained", "train_accuracy"}``."""
    vectors = np.asarray(vectors, np.float32)
    cats = np.asarray(categories, dtype=object)
    heads = []
    for key in keys:
        labels = np.asarray(key_values(extracted, key), dtype=object)
        for cat in sorted(set(cats.tolist())):
            mask = (cats == cat) & np.array([lab is not None for lab in labels], dtype=bool)
            if mask.sum() < min_listings or len(set(labels[mask].tolist())) < 2:
                continue
            head = train_head(vectors[mask], labels[mask].tolist(), epochs, lr, weight_decay, seed=seed)
            heads.append({**head, "category": cat, "key": key})
    return heads


def crossfit_predictions(vectors: np.ndarray, meta: Mapping[str, Sequence], queries: np.ndarray,
                         query_skus: Sequence[str], query_categories: Sequence[Optional[str]], keys: Sequence[str],
                         epochs: int, lr: float, weight_decay: float, seed: int = 0, k: int = 3,
                         min_listings: int = MIN_LISTINGS, folds: int = FOLDS) -> list[dict]:
    """Per query, ``{key: [{"value", "score"}]}`` (top ``k``) from heads fitted on the listings
    (``vectors`` with ``meta``: ``category``, ``extracted``, ``sku_id``) **without** the query's
    SKU: the query SKUs are split into ``folds`` groups, one set of heads per group. A query is
    read with the heads of ``query_categories[i]`` (the category serving would use)."""
    out: list[dict] = [{} for _ in range(len(queries))]
    for rows, keep in sku_folds(meta["sku_id"], query_skus, folds):
        predictor = ProductPredictor(train_heads(
            np.asarray(vectors)[keep], np.asarray(meta["category"], dtype=object)[keep].tolist(),
            np.asarray(meta["extracted"], dtype=object)[keep].tolist(), keys, epochs, lr, weight_decay, seed,
            min_listings))
        for i in rows:
            out[i] = predictor.predict(queries[i], query_categories[i], k)
    return out


def save_product_heads(heads: Sequence[dict], out_dir: Path, encoder_fingerprint: Optional[str]) -> None:
    """Write the heads into a (staged) index version directory: one safetensors file (``<n>.weight``,
    ``<n>.bias``) and a JSON of each head's category, key, classes and training counts."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, h in enumerate(heads):
        tensors[f"{i}.weight"] = np.ascontiguousarray(h["weight"], np.float32)
        tensors[f"{i}.bias"] = np.ascontiguousarray(h["bias"], np.float32)
    save_file(tensors, str(out_dir / HEAD_FILE))
    write_json_atomic(out_dir / LABELS_FILE, {"encoder": encoder_fingerprint, "heads": [
        {"category": h["category"], "key": h["key"], "classes": list(h["classes"]), "trained": h.get("trained"),
         "train_accuracy": h.get("train_accuracy")} for h in heads]})


class ProductPredictor:
    """``predict(vector, category, k)``: per key of the category's heads, the top-k values with
    their probabilities (``{}`` for a category without heads)."""

    def __init__(self, heads: Sequence[dict]):
        self.heads: dict[str, list[dict]] = {}
        for h in heads:
            self.heads.setdefault(h["category"], []).append(h)

    @classmethod
    def load(cls, version_dir: Path, encoder_fingerprint: Optional[str] = None) -> Optional["ProductPredictor"]:
        """The heads saved in ``version_dir`` (None when it has none, or they were fitted on another encoder)."""
        from safetensors.numpy import load_file

        version_dir = Path(version_dir)
        if not (version_dir / HEAD_FILE).is_file() or not (version_dir / LABELS_FILE).is_file():
            return None
        meta = json.loads((version_dir / LABELS_FILE).read_text(encoding="utf-8"))
        if encoder_fingerprint and meta.get("encoder") not in (None, encoder_fingerprint):
            log.warning("%s: the product heads were fitted on encoder %s, the loaded one is %s: not used",
                        version_dir, meta.get("encoder"), encoder_fingerprint)
            return None
        tensors = load_file(str(version_dir / HEAD_FILE))
        heads = []
        for i, h in enumerate(meta.get("heads") or []):
            weight, bias = tensors[f"{i}.weight"], tensors[f"{i}.bias"]
            if weight.shape[0] != len(h["classes"]) or bias.shape[0] != len(h["classes"]):
                raise ValueError(f"{version_dir}: product head {i} ({h['category']}/{h['key']}) has "
                                 f"{weight.shape[0]} rows for {len(h['classes'])} values")
            heads.append({**h, "weight": weight, "bias": bias})
        return cls(heads)

    def predict(self, vector: np.ndarray, category: Optional[str], k: int = 3) -> dict[str, list[dict]]:
        v = np.asarray(vector, np.float32).reshape(1, -1)
        out = {}
        for h in self.heads.get(category or "", ()):
            if h["weight"].shape[1] != v.shape[1]:
                raise ValueError(f"product head {h['category']}/{h['key']} expects {h['weight'].shape[1]}-d "
                                 f"vectors, got {v.shape[1]}-d")
            p = softmax(v @ h["weight"].T + h["bias"])[0]
            top = np.argsort(-p)[:k]
            out[h["key"]] = [{"value": h["classes"][j], "score": float(p[j])} for j in top]
        return out

    def summary(self) -> dict:
        """Heads, keys, and per key the listings its heads learnt from (over all categories)."""
        heads = [h for hs in self.heads.values() for h in hs]
        trained: dict[str, int] = {}
        for h in heads:
            trained[h["key"]] = trained.get(h["key"], 0) + int(h.get("trained") or 0)
        return {"heads": len(heads), "keys": sorted(trained), "trained": trained}
