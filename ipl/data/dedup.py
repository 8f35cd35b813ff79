"""Near-duplicate descriptions: MinHash signatures + LSH banding, verified per bucket.

``minhash(text, cfg)`` computes a signature over character n-grams of the match-key form of
the text (case, spaces and punctuation removed). ``band_keys(sig, cfg)`` splits it into
bands; rows sharing a band key are candidates. ``mark_duplicates(group)`` runs inside one
band bucket (a Ray Data ``groupby(...).map_groups``): walking rows by listing id, a row whose
estimated Jaccard similarity with an earlier kept row of the bucket reaches the threshold is
a duplicate; the earliest listing of a cluster is kept.
"""
from __future__ import annotations

import zlib

import numpy as np
from pydantic import Field, model_validator

from ipl.config import Strict
from ipl.text.normalize import match_key

_PRIME = (1 << 61) - 1


class DedupConfig(Strict):
    """MinHash-LSH settings."""

    enabled: bool = Field(True, description="Detect near-duplicate descriptions.")
    threshold: float = Field(0.85, gt=0, le=1, description="Estimated Jaccard similarity that makes a duplicate.")
    num_perm: int = Field(32, ge=4, le=256, description="MinHash permutations.")
    bands: int = Field(8, ge=1, description="LSH bands (num_perm must be divisible by bands).")
    ngram: int = Field(5, ge=1, le=20, description="Character n-gram size (on the match-key form).")
    seed: int = Field(1, description="Seed of the hash permutations.")

    @model_validator(mode="after")
    def _bands(self):
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be divisible by bands ({self.bands})")
        return self


_PARAMS: dict = {}


def _params(cfg: DedupConfig):
    key = (cfg.num_perm, cfg.seed)
    if key not in _PARAMS:
        rng = np.random.default_rng(cfg.seed)
        a = rng.integers(1, _PRIME, cfg.num_perm, dtype=np.uint64)
        b = rng.integers(0, _PRIME, cfg.num_perm, dtype=np.uint64)
        _PARAMS[key] = (a, b)
    return _PARAMS[key]


def shingles(text: str, n: int) -> np.ndarray:
    key = match_key(text)
    if len(key) < n:
        grams = {key} if key else set()
    else:
        grams = {key[i : i + n] for i in range(len(key) - n + 1)}
    return np.array(sorted(zlib.crc32(g.encode()) for g in grams), dtype=np.uint64)


def minhash(text: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature (uint32, length num_perm) of ``text``."""
    h = shingles(text, cfg.ngram)
    if h.size == 0:
        return np.full(cfg.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
    a, b = _params(cfg)
    # (a*h + b) mod p with 64-bit wrap-around is fine as a hash family here
    vals = (h[:, None] * a[None, :] + b[None, :]) % np.uint64(_PRIME)
    return (vals.min(axis=0) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def band_keys(sig: np.ndarray, cfg: DedupConfig) -> list[int]:
    rows = cfg.num_perm // cfg.bands
    return [
        (band << 32) ^ zlib.crc32(np.asarray(sig[band * rows : (band + 1) * rows], dtype=np.int64).tobytes())
        for band in range(cfg.bands)
    ]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def explode_bands(batch: dict, cfg: DedupConfig) -> dict:
    """One row per (band key, listing): the input of the bucket grouping."""
    keys, ids, sigs = [], [], []
    for lid, sig in zip(batch["listing_id"], batch["minhash"]):
        for k in band_keys(np.asarray(sig), cfg):
            keys.append(k)
            ids.append(lid)
            sigs.append(np.asarray(sig, dtype=np.int64))
    return {
        "band": np.array(keys, dtype=np.int64),
        "listing_id": np.array(ids, dtype=object),
        "minhash": np.stack(sigs) if sigs else np.zeros((0, cfg.num_perm), dtype=np.int64),
    }


def mark_duplicates(group: dict, threshold: float) -> dict:
    """Within one band bucket: the listing ids that duplicate an earlier kept listing."""
    ids = np.asarray(group["listing_id"], dtype=object)
    if len(ids) < 2:
        return {"listing_id": np.array([], dtype=object), "duplicate_of": np.array([], dtype=object)}
    order = np.argsort(ids)
    sigs = np.stack([np.asarray(group["minhash"][i]) for i in order])
    ids = ids[order]
    kept: list[int] = []
    dups, of = [], []
    for i in range(len(ids)):
        if kept:
            sim = (sigs[kept] == sigs[i]).mean(axis=1)
            j = int(np.argmax(sim))
            if sim[j] >= threshold:
                dups.append(ids[i])
                of.append(ids[kept[j]])
                continue
        kept.append(i)
    return {"listing_id": np.array(dups, dtype=object), "duplicate_of": np.array(of, dtype=object)}
