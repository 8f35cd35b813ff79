"""Offline captions of listings: a Ray Data actor pool running the domain VLM.

``caption_listings(cfg, listings, out_dir, vlm_dir, keys_for)`` reads the listings (listing_id,
category, language, photos), skips those already captioned under the same key, and writes the
rest as ``part-NNNNN.parquet`` files in ``out_dir`` (listing_id, caption, model), each file
renamed into place whole, so a killed run resumes where it stopped and a reader never sees a
half-written file. The key (``_captions.json``) is the VLM's fingerprint and every setting that
changes a caption: a new model or prompt starts over (the old files are moved aside, not
mixed in). ``CaptionModel`` is the actor: it loads the VLM once, builds the context-conditioned
prompt (:func:`ipl.caption.prompts.caption_prompt`: the category and the keys the caption is
for) and generates greedily in batches (:func:`ipl.generate.local.generate_batch`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

from pydantic import Field

from ipl.caption.cqe import CQEConfig
from ipl.config import Strict
from ipl.runtime import Progress, read_json, write_json_atomic

log = logging.getLogger("ipl.caption")
KEY_FILE = "_captions.json"
PROMPT_VERSION = 1  # bump when caption_prompt changes what it asks
READ_CPUS = 0.25  # per Ray Data read/filter task feeding the captioning actors
LIST_CPUS = 1.0  # Ray Data's file-listing task asks for a whole CPU: the actors must leave it free
PROGRESS_S = 10.0  # seconds between progress lines of the offline captions


class CaptionConfig(Strict):
    """Offline captioning of the indexed listings (CASLIE) and the vote that keeps a caption."""

    enabled: bool = Field(False, description="Caption listings' photos with the domain VLM (which listings: scope).")
    scope: Literal["evaluated", "all"] = Field(
        "evaluated", description="Which listings `ipl index` captions: evaluated = those its caption evaluation and "
        "`ipl eval` read (the held-out queries and the evaluation's listings; serving captions uploads itself and "
        "reads no offline caption), all = every listing (a caption catalogue for other uses).")
    vlm: Optional[str] = Field(None, description="VLM directory (null: the run's fine-tuned VLM, models/vlm-ft).")
    batch_size: int = Field(8, ge=1, description="Listings per generate call.")
    concurrency: int = Field(1, ge=1, description="Captioning actors.")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (production: 1; the VLM then runs on cuda).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="VLM dtype (auto: float32 on the CPU, bfloat16 on a GPU that has it, else float16 after "
        "a finite-logits probe; ipl.devices).")
    max_new_tokens: int = Field(48, ge=4, le=256, description="Caption length cap in tokens (the prompt asks for "
                                "at most 50 words).")
    params_b: Optional[float] = Field(None, gt=0, description="VLM parameters in billions, for the offline GPU memory "
                                      "check (null: counted from the model directory when it is present).")
    max_photos: Optional[int] = Field(None, ge=1, le=9, description="Photos per listing given to the VLM at most "
                                      "(null: the model's image policy; each photo is sized by it, as in training).")
    max_listings: Optional[int] = Field(None, ge=1, description="Caption at most this many listings (null: all).")
    cqe: CQEConfig = Field(default_factory=CQEConfig, description="Caption quality evaluation.")
    text_index: bool = Field(True, description="Build the text index (the listings' texts in the CLIP's text tower) "
                             "that a kept caption is searched against.")
    fusion_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant of image + caption retrieval.")
    text_weight: float = Field(1.0, ge=0, description="Weight of the caption's text ranking in the fusion "
                               "(the image ranking has 1).")


class CaptionModel:
    """Ray Data actor: photos + context in, captions out."""

    def __init__(self, vlm_dir: str, keys_by_category: dict[str, list[str]], cfg: dict):
        import torch

        from ipl.models.vlm import capped_policy, load_vlm, model_fingerprint

        self.cfg = CaptionConfig(**cfg)
        from ipl.devices import placement_device, resolve_dtype

        device = placement_device("auto", self.cfg.num_gpus)
        dtype = resolve_dtype(self.cfg.dtype, device)
        self.vlm = load_vlm(vlm_dir, dtype=getattr(torch, dtype), device=device)
        self.model = model_fingerprint(Path(vlm_dir))
        self.images = capped_policy(self.vlm.images, self.cfg.max_photos)
        self.keys = keys_by_category

    def __call__(self, batch: dict) -> dict:
        from ipl.caption.prompts import caption_messages, caption_prompt, clean_caption, cqe_prompt
        from ipl.generate.local import choose_batch, generate_batch
        from ipl.photos import fit_photos

        requests = []
        n = len(batch["listing_id"])
        languages = batch["language"] if "language" in batch else ["en"] * n
        for i in range(n):
            images = fit_photos(batch["photos"][i], self.images)  # the model's policy, as in training
            cat, lang = str(batch["category"][i]), str(languages[i] or "en")
            prompt = caption_prompt(cat, self.keys.get(cat, []), lang)
            requests.append((caption_messages(len(images), prompt, lang), images))
        texts = [clean_caption(t) for t in generate_batch(self.vlm, requests, self.cfg.max_new_tokens,
                                                              self.cfg.batch_size)]
        answers = [None] * n
        if "llm" in self.cfg.cqe.judges:  # the LLM judge's yes/no, asked of the same model with the same photos
            asks = [(caption_messages(len(images), cqe_prompt(text, str(batch["category"][i]), str(languages[i] or "en")),
                                      str(languages[i] or "en")), images)
                    for i, (text, (_, images)) in enumerate(zip(texts, requests))]
            for lang, choices in (("zh", ("是", "否")), ("en", ("yes", "no"))):  # a closed yes/no per language
                rows = [i for i in range(n) if (str(languages[i] or "en") == "zh") == (lang == "zh")]
                if rows:
                    for i, (said, p) in zip(rows, choose_batch(self.vlm, [asks[i] for i in rows], choices,
                                                               self.cfg.batch_size)):
                        answers[i] = f"{said} (p={p:.3f})"
        return {"listing_id": [str(x) for x in batch["listing_id"]], "caption": texts, "cqe_answer": answers,
                "model": [self.model] * n}


def caption_key(cfg: CaptionConfig, vlm_dir: Path, keys_by_category: dict) -> str:
    from ipl.models.vlm import capped_policy, image_policy_of, model_fingerprint

    images = capped_policy(image_policy_of(vlm_dir), cfg.max_photos)
    blob = json.dumps({"model": model_fingerprint(vlm_dir), "prompt": PROMPT_VERSION, "keys": keys_by_category,
                       "llm": "llm" in cfg.cqe.judges and "choice:yes/no", "images": images.model_dump(),
                       **cfg.model_dump(include={"max_new_tokens"})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def done_ids(out_dir: Path) -> set[str]:
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for f in sorted(out_dir.glob("part-*.parquet")):
        ids.update(pq.read_table(f, columns=["listing_id"]).column("listing_id").to_pylist())
    return ids


def read_captions(out_dir: Path, with_answers: bool = False) -> dict:
    """listing_id -> caption of the finished files (``with_answers``: -> (caption, the LLM judge's reply))."""
    import pyarrow.parquet as pq

    out: dict = {}
    for f in sorted(Path(out_dir).glob("part-*.parquet")):
        t = pq.read_table(f)
        ids, caps = t.column("listing_id").to_pylist(), t.column("caption").to_pylist()
        if with_answers:
            answers = t.column("cqe_answer").to_pylist() if "cqe_answer" in t.column_names else [None] * len(ids)
            out.update(zip(ids, zip(caps, answers)))
        else:
            out.update(zip(ids, caps))
    return out


def caption_listings(cfg: CaptionConfig, listings: str | Path, out_dir: Path, vlm_dir: Path,
                     keys_by_category: dict[str, list[str]], exclude: Sequence[str] = (),
                     progress: Optional[Callable[[str], None]] = None,
                     only: Optional[Sequence[str]] = None) -> dict:
    """Caption what is not captioned yet (of ``only`` when given, never ``exclude``); returns counts
    (``reused``: captions already there, of any listing) and the throughput."""
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq
    import ray.data

    from ipl.models.vlm import require_local_dir

    vlm_dir = require_local_dir(vlm_dir, "caption VLM", "train it first with `ipl train`, or set caption.vlm")
    out_dir = Path(out_dir)
    key = caption_key(cfg, vlm_dir, keys_by_category)
    if out_dir.is_dir() and (read_json(out_dir / KEY_FILE) if (out_dir / KEY_FILE).is_file() else {}).get("key") != key:
        stale = out_dir.with_name(f"{out_dir.name}.stale-{int(time.time())}")
        log.warning("captions in %s were made by another model or prompt: moved to %s, starting over", out_dir, stale)
        os.replace(out_dir, stale)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / KEY_FILE, {"key": key, "vlm": str(vlm_dir)})
    done = done_ids(out_dir)
    skip = done | {str(x) for x in exclude}
    table = pds.dataset(str(listings), format="parquet").to_table(columns=["listing_id"])
    wanted_ids = None if only is None else {str(x) for x in only}
    todo = [i for i in table.column("listing_id").to_pylist()
            if str(i) not in skip and (wanted_ids is None or str(i) in wanted_ids)]
    if cfg.max_listings is not None:
        todo = todo[: max(0, cfg.max_listings - len(done))]
    say = progress or log.info
    if not todo:
        say(f"captions: all {len(done)} listings already captioned in {out_dir}")
        return {"captioned": 0, "reused": len(done), "total": len(done), "listings_per_s": None, "key": key}
    wanted = set(todo)
    columns = ["listing_id", "category", "language", "photos"]
    names = set(pds.dataset(str(listings), format="parquet").schema.names)
    from ray.data.expressions import col

    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cfg.concurrency * cfg.num_cpus + LIST_CPUS > cpus:  # the actors would hold every CPU: the read never starts
        raise ValueError(f"caption.concurrency {cfg.concurrency} x caption.num_cpus {cfg.num_cpus:g} leaves less than "
                         f"{LIST_CPUS:g} of the cluster's {cpus:g} CPUs for Ray Data's file listing and reads (it "
                         "would wait forever): lower one of them")
    ds = ray.data.read_parquet(str(listings), num_cpus=READ_CPUS).select_columns([c for c in columns if c in names])
    ds = ds.filter(expr=col("listing_id").is_in(sorted(wanted)), num_cpus=READ_CPUS)
    # small blocks: finished captions reach the part files while the rest runs (a killed run keeps them)
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_size * 4)
    t0 = time.monotonic()
    out = ds.map_batches(CaptionModel, fn_constructor_args=(str(vlm_dir), keys_by_category, cfg.model_dump()),
                         batch_size=cfg.batch_size * 4, compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
                         num_cpus=cfg.num_cpus,
                         num_gpus=cfg.num_gpus or None)
    n_done, part = 0, len(list(out_dir.glob("part-*.parquet")))
    progress = Progress("captions: listings", len(todo), every=PROGRESS_S, say=say)
    for batch in out.iter_batches(batch_size=cfg.batch_size * 8, batch_format="pyarrow"):
        tmp = out_dir / f".part-{part:05d}.parquet.tmp"
        pq.write_table(batch, tmp)
        os.replace(tmp, out_dir / f"part-{part:05d}.parquet")  # whole files only: a resume reads what is here
        part, n_done = part + 1, n_done + batch.num_rows
        progress.update(n_done, force=n_done == len(todo))  # a line every PROGRESS_S, and the last
    seconds = time.monotonic() - t0
    return {"captioned": n_done, "reused": len(done), "total": n_done + len(done), "seconds": round(seconds, 1),
            "listings_per_s": round(n_done / seconds, 3) if seconds > 0 else None, "key": key}


def remove_stale(out_dir: Path) -> None:
    """Delete the directories a model/prompt change moved aside."""
    for d in Path(out_dir).parent.glob(f"{Path(out_dir).name}.stale-*"):
        shutil.rmtree(d, ignore_errors=True)
