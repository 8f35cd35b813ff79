"""A content-addressed disk cache of a locked image trunk's features, shared by a run's stages.

With the towers locked (LiT), the image trunk is the same network in ``ipl prepare``'s
image-text check, in ``ipl index``'s encoder fine-tuning and in its embeddings: each of them
ran every photo through it again (three passes of the expensive part, the projections being
cheap). :class:`FeatureCache` keeps the trunk's output once per photo:

* the cache key of a photo is a digest of its decoded pixels (mode, size and bytes), so the
  same photo read from any stage's Parquet hits, and a re-encoded photo misses;
* features live under ``<root>/<trunk key>/``: the trunk key (:func:`trunk_key`) digests the
  trunk's weights and the image preprocess, so another encoder, another input size or a
  fine-tuned (unlocked) trunk never reads features that are not its own;
* each writer adds whole parts (``part-*.keys.npy`` + ``part-*.feats.npy``, written to a temporary
  name and renamed, the keys last): Ray Data actors and Ray Train workers on one machine
  share the directory without locks, a killed writer leaves no half part, and a reader that
  misses rescans for parts written since it looked;
* features are float32, exactly what the trunk returned, so an embedding computed through the
  cache equals one computed without it.

It is on in the local configs (``consistency.feature_cache`` in prepare, ``feature_cache`` in
index); the cluster configs leave it off (a run of millions of photos on GPUs would spend more
on the shared disk than on the trunk).
"""
from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

RUN_CACHE = "cache/image-features"  # under a run directory: what the local configs use
DIGEST_BYTES = 16
KEYS_SUFFIX, FEATS_SUFFIX = ".keys.npy", ".feats.npy"


def photo_key(image) -> bytes:
    """The cache key of a decoded PIL image: its mode, size and pixels."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.digest()


def trunk_key(trunk, preprocess) -> str:
    """A digest of a trunk's parameters and buffers (names, shapes, values) and the preprocess."""
    import torch

    h = hashlib.sha256(repr(preprocess).encode())
    for name, tensor in trunk.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (BatchNorm's counter) too
        h.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


class FeatureCache:
    """Trunk features by photo key under ``root/<key>``: ``get(keys)`` and ``put(keys, feats)``."""

    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / key
        self._where: dict[bytes, tuple[str, int]] = {}
        self._feats: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        self.refresh()

    def __len__(self) -> int:
        return len(self._where)

    def refresh(self) -> int:
        """Read the keys of parts written since the last look; returns how many parts were new."""
        if not self.dir.is_dir():
            return 0
        new = 0
        for keys_file in sorted(self.dir.glob(f"part-*{KEYS_SUFFIX}")):
            part = keys_file.name[: -len(KEYS_SUFFIX)]
            if part in self._feats:
                continue
            feats_file = self.dir / f"{part}{FEATS_SUFFIX}"
            try:
                keys = np.load(keys_file)
                feats = np.load(feats_file, mmap_mode="r")
            except (OSError, ValueError) as exc:  # a part being replaced, or damaged: skip it
                log.warning("feature cache %s: part %s unreadable (%s); skipped", self.dir, part, exc)
                continue
            if len(keys) != len(feats):
                log.warning("feature cache %s: part %s has %d keys for %d features; skipped",
                            self.dir, part, len(keys), len(feats))
                continue
            self._feats[part] = feats
            for row, k in enumerate(keys):
                self._where.setdefault(bytes(k), (part, row))
            new += 1
        return new

    def get(self, keys: Sequence[bytes]) -> list[Optional[np.ndarray]]:
        """The cached feature of each key (None: not cached); rescans once when any is missing."""
        if any(k not in self._where for k in keys):
            self.refresh()
        out = []
        for k in keys:
            where = self._where.get(k)
            out.append(None if where is None else np.array(self._feats[where[0]][where[1]], np.float32))
        found = sum(f is not None for f in out)
        self.hits, self.misses = self.hits + found, self.misses + len(keys) - found
        return out

    def put(self, keys: Sequence[bytes], feats: np.ndarray) -> None:
        """Add one part (keys not cached yet only); the features file first, the keys file last."""
        feats = np.asarray(feats, np.float32)
        if len(keys) != len(feats):
            raise ValueError(f"feature cache: {len(keys)} keys for {len(feats)} features")
        fresh = [i for i, k in enumerate(keys) if k not in self._where]
        fresh = list({keys[i]: i for i in fresh}.values())  # one row per key
        if not fresh:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        part = f"part-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        key_arr = np.frombuffer(b"".join(keys[i] for i in fresh), dtype=f"S{DIGEST_BYTES}")
        for suffix, arr in ((FEATS_SUFFIX, feats[fresh]), (KEYS_SUFFIX, key_arr)):
            tmp = self.dir / f".{part}{suffix}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, self.dir / f"{part}{suffix}")
        self._feats[part] = feats[fresh]
        for row, i in enumerate(fresh):
            self._where[keys[i]] = (part, row)
