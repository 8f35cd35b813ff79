"""Verified loading and fan-out search of a sharded index version.

``ShardedIndex.load(root, dim=..., fingerprint=...)`` reads ``root/current`` (or a version
directory), checks every file's size and sha256 against the manifest, the dimension and the
encoder fingerprint, and only then calls ``faiss.read_index``. ``search(vectors, k)`` queries
every shard in parallel threads (FAISS releases the GIL), merges the top-k and returns hits
with their similarity, whether they pass the identical-product threshold, and the listing's
metadata. ``IndexHolder`` keeps the loaded version serving while a newer one is checked (in a
background thread): a bad new version is refused and the old one stays; a swapped-out version
is closed only after the last search using it ends.
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ipl.index.faiss_index import merge_topk, normalize, search_copy, set_search_params
from ipl.index.manifest import IndexIntegrityError, check_compatible, current_version, verify_files

log = logging.getLogger("ipl.index")


def resolve_version_dir(path: Path) -> Path:
    """A version directory, or an index root whose ``current`` names one."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    cur = current_version(path)
    if cur is None:
        raise FileNotFoundError(f"no index at {path}: no manifest.json and no 'current' pointer (run `ipl index`)")
    return path / cur


class ShardedIndex:
    def __init__(self, version_dir: Path, manifest: dict, shards: list, offsets: list[int], metadata,
                 identical_threshold: float):
        self.version_dir, self.manifest = version_dir, manifest
        self.shards, self.offsets, self.metadata = shards, offsets, metadata
        self.identical_threshold = identical_threshold
        self._vocabulary: Optional[dict] = None
        self._merged: dict[str, dict] = {}  # category -> its vocabulary with the other categories' values
        self._colour = None
        self._product = None
        self._sku_values: dict[str, dict] = {}
        self.text_index = None  # the version's text index (CASLIE captions are searched in it), if built
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(shards)), thread_name_prefix="faiss-shard")

    @property
    def evidence(self) -> dict:
        """The evidence calibration of this version (empty for an index built before it)."""
        return self.manifest.get("evidence") or {}

    def sku_values(self, key: str) -> dict[str, str]:
        """SKU -> the value of ``key`` most of its indexed listings state (computed once per version)."""
        if key not in self._sku_values:
            from ipl.index.calibration import sku_values

            m = self.metadata
            self._sku_values[key] = sku_values(m["sku_id"].tolist(), m["attributes"].tolist(), key) \
                if len(m) and "attributes" in m else {}
        return self._sku_values[key]

    @property
    def caption(self) -> dict:
        """The caption settings this version was calibrated with (judges, encoder threshold, fusion)."""
        return self.manifest.get("caption") or {}

    def search_text(self, text_vectors: np.ndarray, k: int) -> list[list[dict]]:
        """Per text query (captions embedded by the CLIP's text tower), up to k listings of the text
        index: id, score (text cosine), metadata; [] per query without a text index."""
        if self.text_index is None:
            return [[] for _ in range(len(np.atleast_2d(text_vectors)))]
        from ipl.index.captions import text_search

        scores, ids = text_search(self.text_index, np.atleast_2d(text_vectors), k)
        out = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for sc, i in zip(row_s, row_i):
                if i < 0:
                    continue
                hits.append({"id": int(i), "score": float(sc), "identical": False,
                             **self.metadata.loc[int(i)].to_dict()})
            out.append(hits)
        return out

    @property
    def colour(self):
        """The photo-colour head calibrated with this version (None when it has none)."""
        if self._colour is None:
            from ipl.index.colour import ColourPredictor

            self._colour = ColourPredictor.load(self.version_dir) or False
        return self._colour or None

    @property
    def product(self):
        """The product heads (brand, model per category) calibrated with this version (None when it has none)."""
        if self._product is None:
            from ipl.index.product import ProductPredictor

            fingerprint = (self.manifest.get("encoder") or {}).get("fingerprint")
            self._product = ProductPredictor.load(self.version_dir, fingerprint) or False
        return self._product or None

    def vocabulary(self, category: str) -> dict[str, list[str]]:
        """Scored key -> the values the indexed listings of ``category`` state, then those of the same
        key in the other categories (:func:`ipl.extract.matcher.across_categories`: another
        category's brand is a wrong brand too); read once, merged once per category."""
        from ipl.extract.matcher import across_categories

        if self._vocabulary is None:
            path = self.version_dir / self.manifest.get("vocabulary", "vocabulary.json")
            self._vocabulary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if category not in self._merged:
            if category not in self._vocabulary:
                return {}
            self._merged[category] = across_categories(self._vocabulary, category)
        return self._merged[category]

    @property
    def leading_words(self) -> dict[str, list[str]]:
        """Distinctive leading word of multi-word product values -> those values (the manifest's
        ``leading_words``; empty for a version built before them): the guard blocks the ones the
        evidence does not support (:func:`ipl.extract.matcher.guarded_words`)."""
        return self.manifest.get("leading_words") or {}

    @property
    def category_words(self) -> dict[str, list[str]]:
        """Category -> the other categories' names its sellers rarely write (the manifest's
        ``category_words``; empty for a version built before them): the guard blocks them."""
        return self.manifest.get("category_words") or {}

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def ntotal(self) -> int:
        return int(self.manifest["ntotal"])

    @classmethod
    def load(cls, path: Path, dim: Optional[int] = None, fingerprint: Optional[str] = None,
             nprobe: Optional[int] = None, ef_search: Optional[int] = None,
             identical_threshold: Optional[float] = None, use_gpu: bool = True) -> "ShardedIndex":
        import faiss
        import pyarrow.parquet as pq

        version_dir = resolve_version_dir(path)
        manifest = verify_files(version_dir)
        check_compatible(manifest, dim, fingerprint, version_dir)
        params = manifest.get("search", {})
        shards, offsets, frames = [], [], []
        for shard in manifest["shards"]:
            try:
                index = faiss.read_index(str(version_dir / shard["index"]))
            except RuntimeError as exc:
                raise IndexIntegrityError(f"{version_dir / shard['index']}: faiss cannot read it: "
                                          f"{str(exc).splitlines()[0]}") from None
            if index.d != manifest["dimension"] or index.ntotal != shard["id_end"] - shard["id_start"]:
                raise IndexIntegrityError(f"{shard['index']}: dimension {index.d} / {index.ntotal} vectors, manifest "
                                          f"says {manifest['dimension']} / {shard['id_end'] - shard['id_start']}")
            set_search_params(index, nprobe or params.get("nprobe", 16), ef_search or params.get("ef_search", 64))
            meta = pq.read_table(version_dir / shard["metadata"]).to_pandas()
            if len(meta) != index.ntotal or (len(meta) and (meta["id"].iloc[0] != shard["id_start"])):
                raise IndexIntegrityError(f"{shard['metadata']}: {len(meta)} rows do not match shard {shard['index']}")
            index, where = search_copy(index, use_gpu)  # a GPU copy where FAISS has a GPU here
            shards.append(index)
            offsets.append(shard["id_start"])
            frames.append(meta)
        import pandas as pd

        metadata = pd.concat(frames).set_index("id") if frames else pd.DataFrame()
        threshold = identical_threshold if identical_threshold is not None else \
            manifest.get("thresholds", {}).get("identical")
        if threshold is None:  # the identical tier is disabled: no hit is the identical product
            threshold = float("inf")
        log.info("loaded index %s: %d vectors in %d shards (%s, searched on %s)", version_dir, manifest["ntotal"],
                 len(shards), manifest["index_type"], where if shards else "-")
        out = cls(version_dir, manifest, shards, offsets, metadata, float(threshold))
        if manifest.get("text_index"):
            from ipl.index.captions import load_text_index

            out.text_index = load_text_index(version_dir, manifest)
            if out.text_index.ntotal != manifest["ntotal"]:
                raise IndexIntegrityError(f"{version_dir}: text index has {out.text_index.ntotal} rows, the image "
                                          f"index {manifest['ntotal']}: they would not line up")
        return out

    def search_raw(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global ids), both (nq, k); fans out to the shards in parallel."""
        q = normalize(np.atleast_2d(queries))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {q.shape[1]}, the index {self.dim}")
        results = list(self._pool.map(lambda ix: ix.search(q, min(k, max(1, ix.ntotal))), self.shards))
        return merge_topk([r[0] for r in results], [r[1] for r in results], self.offsets, k)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[dict]]:
        """Per query, up to k hits: id, score, identical (score >= threshold), metadata."""
        scores, ids = self.search_raw(queries, k)
        out = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0:
                    continue
                meta = self.metadata.loc[int(i)].to_dict()
                if isinstance(meta.get("attributes"), str):
                    try:
                        meta["attributes"] = json.loads(meta["attributes"])
                    except ValueError:
                        pass
                hits.append({"id": int(i), "score": float(s), "identical": bool(s >= self.identical_threshold),
                             **meta})
            out.append(hits)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class IndexHolder:
    """The version being served, swapped only for a newer one that passes every check.

    ``lease()`` is how a request uses the index: a context manager yielding the version served
    when it was entered; a version that was swapped out is closed only when its last lease ends,
    so a rollout never closes a thread pool under a search still running on it. ``start(every_s)``
    checks for a newer version in a background thread (the verification reads and hashes every
    file: that work stays off the request path); the swap itself is one assignment under a lock.
    """

    def __init__(self, root: Path, dim: Optional[int] = None, fingerprint: Optional[str] = None, **load_kwargs):
        self.root, self.dim, self.fingerprint, self.load_kwargs = Path(root), dim, fingerprint, load_kwargs
        self.index: Optional[ShardedIndex] = None
        self.last_error: Optional[str] = None
        self.refreshes = {"checks": 0, "swaps": 0, "refused": 0}
        self._lock = threading.Lock()  # one refresh at a time
        self._leases = threading.Lock()  # guards the lease counts and the swap
        self._users: dict[int, int] = {}
        self._retired: dict[int, ShardedIndex] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def refresh(self) -> bool:
        """Load ``current`` if it differs from the served version; False (and the old one stays) if refused."""
        with self._lock:
            self.refreshes["checks"] += 1
            try:
                target = resolve_version_dir(self.root)
                if self.index is not None and target.name == self.index.version_dir.name:
                    return True
                new = ShardedIndex.load(target, dim=self.dim, fingerprint=self.fingerprint, **self.load_kwargs)
            except (IndexIntegrityError, FileNotFoundError) as exc:
                self.last_error = str(exc)
                self.refreshes["refused"] += 1
                log.error("index refresh refused, still serving %s: %s",
                          self.index.version if self.index else "nothing", exc)
                return False
            with self._leases:
                old, self.index, self.last_error = self.index, new, None
                self.refreshes["swaps"] += 1
                if old is not None:
                    if self._users.get(id(old)):
                        self._retired[id(old)] = old  # closed by its last lease
                        old = None
            if old is not None:
                old.close()
            return True

    @contextmanager
    def lease(self) -> Iterator[ShardedIndex]:
        """The served version, kept open until the ``with`` block ends."""
        with self._leases:
            index = self.index
            if index is None:
                raise FileNotFoundError(f"no index loaded from {self.root}: {self.last_error}")
            self._users[id(index)] = self._users.get(id(index), 0) + 1
        try:
            yield index
        finally:
            closing = None
            with self._leases:
                n = self._users[id(index)] - 1
                if n:
                    self._users[id(index)] = n
                else:
                    del self._users[id(index)]
                    closing = self._retired.pop(id(index), None)
            if closing is not None:
                closing.close()

    def start(self, every_s: float) -> None:
        """Check for a newer version every ``every_s`` seconds in a daemon thread (0: never)."""
        if every_s <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(every_s):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a refresh must never kill the thread; the old index serves
                    log.exception("index refresh failed")

        self._thread = threading.Thread(target=loop, name="ipl-index-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
