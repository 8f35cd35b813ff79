"""Listing photo embeddings, as a Ray Data actor-pool stage.

``ListingEmbedder(clip_source)`` holds the open_clip model (one per actor). ``__call__``
takes a batch with ``photos`` and returns it without the photo bytes and with
``embedding`` (float32, L2-normalised mean of the first ``photos_per_listing`` photos),
``colour`` (the photos' colour features, :mod:`ipl.index.colour`) and ``embed_error`` (why a row has no vector: no photos, undecodable photos). The composer
drops rows with an error and counts them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ipl.data.contract import require_columns
from ipl.index.colour import FEATURE_DIM, photos_features
from ipl.models.clip import load_clip
from ipl.photos import decode_photo


COLOUR_DIM = FEATURE_DIM


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def arrow_to_vectors(column) -> np.ndarray:
    """A FixedSizeList<float32> (chunked) column as an (n, d) array."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if len(arr) == 0:
        return np.zeros((0, arr.type.list_size), np.float32)
    return np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(arr), arr.type.list_size)


class ListingEmbedder:
    def __init__(self, clip_source: str, weights: str | None = None, photos_per_listing: int = 3,
                 threads: int = 1, num_gpus: float = 0, device: str = "auto", feature_cache: str | None = None):
        from ipl.devices import placement_device

        torch.set_num_threads(max(1, threads))
        device = placement_device(device, num_gpus)  # resolved in the actor: its GPU, if it reserved one
        self.clip = load_clip(clip_source, weights, device=device, feature_cache=feature_cache)
        self.n = photos_per_listing
        self.device = device

    def __call__(self, batch: pa.Table) -> pa.Table:
        require_columns({c: None for c in batch.column_names}, ["photos"], "embed")
        photos = batch.column("photos").to_pylist()
        images, owners, errors = [], [], [None] * len(photos)
        colours = np.zeros((len(photos), COLOUR_DIM), np.float32)
        for i, plist in enumerate(photos):
            if not plist:
                errors[i] = "no photos"
                continue
            try:
                decoded = [decode_photo(p) for p in plist[: self.n]]
            except Exception as exc:
                errors[i] = f"unreadable photo: {type(exc).__name__}: {exc}"
                continue
            colours[i] = photos_features(decoded)
            images += decoded
            owners += [i] * len(decoded)
        dim = self.clip.dim
        vectors = np.zeros((len(photos), dim), np.float32)
        if images:
            emb = self.clip.encode_images(images).numpy()
            np.add.at(vectors, np.array(owners), emb)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0).astype(np.float32)
        out = batch.drop_columns(["photos"])
        out = out.append_column("embedding", vectors_to_arrow(vectors))
        out = out.append_column("colour", vectors_to_arrow(colours))
        return out.append_column("embed_error", pa.array(errors, pa.string()))


def load_embeddings(emb_dir: Path, holdout: set, held_out: bool,
                    columns=("listing_id", "sku_id", "spu_id", "category"), vector: str = "embedding"):
    """(vectors, metadata dict) of the held-out rows (``held_out``) or of the indexed ones."""
    import pyarrow as pa
    import pyarrow.dataset as pds

    cols = list(dict.fromkeys(["listing_id", *columns]))
    t = pds.dataset(str(emb_dir), format="parquet").to_table(columns=[*cols, "embed_error", vector])
    ids = t.column("listing_id").to_pylist()
    err = t.column("embed_error").to_pylist()
    mask = [e is None and (i in holdout) == held_out for i, e in zip(ids, err)]
    t = t.filter(pa.array(mask))
    return arrow_to_vectors(t.column(vector)), {c: t.column(c).to_pylist() for c in columns}
