"""The ``ipl index`` stage: fine-tune the encoder, embed, build the sharded FAISS index, publish.

``ipl index [--config jobs/configs/index_local.yaml] [key=value ...]`` or
``ray job submit --working-dir . -- python jobs/build_index.py --config ...``. In order:

1. hold out ``eval.holdout_fraction`` of the listings whose SKU has other listings;
2. fine-tune the CLIP contrastively with Ray Train (:mod:`ipl.index.finetune`);
3. embed every listing with a Ray Data actor pool (:class:`ipl.index.embed.ListingEmbedder`)
   into ``<index>/.embeddings/<key>/`` Parquet, kept for the next build: the key is the listing
   files, the encoder and the embedding settings (:func:`embeddings_key`), so a rebuild with other
   index settings, or the re-run of a build that failed later, embeds nothing;
4. train the coarse quantizer once on a sample, fill the shards in parallel Ray tasks, each
   writing ``shard-NNN.faiss`` + ``shard-NNN.parquet`` (metadata) into a staging directory;
5. train the category head (a Ray task) and evaluate identical (SKU), similar (SPU) and
   category top-1 on the held-out photos; calibrate the evidence model on them
   (:mod:`ipl.evidence.fit`: identical-product threshold, category gate, each basis x key
   level, the in-domain floor; a tier that cannot reach its target is disabled, loudly) and
   write the category's known values (``vocabulary.json``, for the decode-time guard);
6. publish: manifest with checksums, rename, switch ``current`` (:mod:`ipl.index.manifest`).

A re-run with the same listings, encoder and settings reuses the current version
(``rebuild=true`` builds a new one).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ipl.index.config import IndexConfig, ids_digest
from ipl.index.calibration import (evidence_queries, guard_words, key_levels, train_colour, train_product,
                                   vocabulary)
from ipl.index.colour import FEATURES as COLOUR_FEATURES
from ipl.index.embed import arrow_to_vectors, load_embeddings
from ipl.index.faiss_index import INNER_PRODUCT, factory_string
from ipl.index.manifest import (MANIFEST, current_version, next_version, publish, read_manifest, rollback,
                                staging_dir)
from ipl.runtime import ensure_ray, write_json_atomic

log = logging.getLogger("ipl.index")
VOCABULARY = "vocabulary.json"
META_SOURCE = {"listing_id": "listing_id", "sku_id": "sku_id", "spu_id": "spu_id", "category": "category",
               "price": "price", "description": "description", "attributes": "extracted"}


# -- 1. held-out choice -------------------------------------------------------------------------
def choose_holdout(listing_ids: list[str], sku_ids: list[str], fraction: float, seed: int) -> list[str]:
    """Listings kept out of the index: a stable hash picks ``fraction`` of those whose SKU has
    another listing, and every SKU keeps at least one listing in the index."""
    if fraction <= 0:
        return []
    by_sku: dict[str, list[str]] = defaultdict(list)
    for lid, sku in zip(listing_ids, sku_ids):
        by_sku[sku].append(lid)
    chosen = []
    for lids in by_sku.values():
        if len(lids) < 2:
            continue
        lids = sorted(lids)
        picked = [lid for lid in lids if zlib.crc32(f"{seed}:{lid}".encode()) % 10_000 < fraction * 10_000]
        chosen += picked[1:] if len(picked) == len(lids) else picked
    return sorted(chosen)


def untrained_listings(cfg: IndexConfig, listing_ids: list[str], sku_ids: list[str]) -> list[str]:
    """The listings of the SKUs in the instruction data's ``eval.untrained_split`` (what ``ipl eval``
    drafts for): indexed, but no model the index trains sees them. Empty when the split is off or absent."""
    from ipl.data.instructions import split_column

    split = cfg.eval.untrained_split
    groups = split_column(cfg.instructions_dir, split, "group") if split else set()
    if split and not groups:
        log.info("no instruction split %s under %s: every indexed listing may train the index's models", split,
                 cfg.instructions_dir)
    return sorted(lid for lid, sku in zip(listing_ids, sku_ids) if sku in groups)


def listing_files(cfg: IndexConfig) -> list[Path]:
    files = sorted(cfg.listings_dir.rglob("*.parquet")) if cfg.listings_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no cleaned listings at {cfg.listings_dir}: run `ipl prepare` first")
    return files


def build_key(cfg: IndexConfig, fingerprint: str, untrained: list[str] = ()) -> str:
    """What a version depends on: listing files, encoder, index and evaluation settings (``version`` 5: the
    vocabulary holds the listing-level keys and the manifest the ``leading_words`` and
    ``category_words``, which the guard needs, so older versions are rebuilt)."""
    files = [(str(p), p.stat().st_size) for p in listing_files(cfg)]
    blob = json.dumps({"files": files, "encoder": fingerprint, "faiss": cfg.faiss.model_dump(),
                       "embed": cfg.embed.photos_per_listing, "category": cfg.category.model_dump(),
                       "eval": cfg.eval.model_dump(), "threshold": cfg.identical_threshold,
                       "evidence": cfg.evidence.model_dump(), "version": 5, "colour_features": COLOUR_FEATURES,
                       **({"untrained": ids_digest(untrained)} if untrained else {}),
                       **({"caption": caption_fingerprint(cfg)} if cfg.caption.enabled else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


EMBEDDINGS = ".embeddings"  # <index root>/.embeddings/<key>/: one pass's vectors, kept for the next build
EMBED_FORMAT = 1  # bump when the embedding pass writes other columns


def embeddings_key(cfg: IndexConfig, fingerprint: str) -> str:
    """What an embedding pass depends on: the listing files as they are (path, size, mtime), the
    encoder, the photos per listing and the colour features. A rebuild with other FAISS, category
    or evidence settings, or a build that failed after embedding, reads the same vectors again."""
    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in listing_files(cfg)]
    blob = json.dumps({"files": files, "encoder": fingerprint, "embed": cfg.embed.photos_per_listing,
                       "colour_features": COLOUR_FEATURES, "format": EMBED_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def embeddings_for(cfg: IndexConfig, clip_source: str, weights, fingerprint: str) -> tuple[Path, bool]:
    """The directory of this encoder's vectors of these listings, embedding them unless a finished
    pass is there; (directory, reused). Written under a temporary name and renamed when done."""
    done = cfg.index_root / EMBEDDINGS / embeddings_key(cfg, fingerprint)
    if (done / "_DONE").is_file():
        log.info("embeddings of the same listings by the same encoder are in %s: reusing them", done)
        return done, True
    tmp = done.with_name(done.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(done, ignore_errors=True)
    embed(cfg, clip_source, weights, tmp)
    (tmp / "_DONE").write_text("")
    os.replace(tmp, done)
    return done, False


def drop_other_embeddings(root: Path, keep: Optional[Path]) -> None:
    """After a publish: only the vectors the current version was built from stay (none: ``embed.keep``
    false)."""
    for d in (root / EMBEDDINGS).glob("*"):
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def caption_fingerprint(cfg: IndexConfig) -> dict:
    from ipl.index.captions import vlm_dir_of
    from ipl.models.vlm import model_fingerprint

    vlm = vlm_dir_of(cfg)
    return {"settings": cfg.caption.model_dump(), "vlm": model_fingerprint(vlm) if (vlm / "config.json").is_file()
            else None}


# -- 3. embedding ---------------------------------------------------------------------------------
def embed(cfg: IndexConfig, clip_dir: str, weights, out_dir: Path) -> None:
    import ray.data

    from ipl.index.embed import ListingEmbedder
    from ipl.index.finetune import READ_CPUS

    cols = sorted(set(META_SOURCE.values()) | {"photos"})
    e = cfg.embed
    ds = ray.data.read_parquet(str(cfg.listings_dir.resolve()), num_cpus=READ_CPUS).select_columns(cols)
    ds = ds.repartition(target_num_rows_per_block=e.block_rows)
    ds = ds.map_batches(ListingEmbedder, fn_constructor_kwargs={
        "clip_source": clip_dir, "weights": weights, "photos_per_listing": e.photos_per_listing,
        "threads": max(1, int(e.num_cpus)), "num_gpus": e.num_gpus, "feature_cache": cfg.feature_cache_dir},
        batch_size=e.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=e.concurrency),
        num_cpus=e.num_cpus, num_gpus=e.num_gpus or None)
    ds.write_parquet(str(out_dir.resolve()))


# -- 4. shards ---------------------------------------------------------------------------------------
def _kept(table, holdout: set) -> np.ndarray:
    ids = table.column("listing_id").to_pylist()
    errors = table.column("embed_error").to_pylist()
    return np.array([e is None and i not in holdout for i, e in zip(ids, errors)], dtype=bool)


def plan_shards(counts: list[int], shards: int) -> list[list[tuple[int, int, int]]]:
    """Split the kept rows of files (``counts`` each) into up to ``shards`` contiguous, balanced
    shards; a shard is a list of (file index, first kept row, end kept row) slices."""
    total = sum(counts)
    shards = max(1, min(shards, total))
    bounds = [round(total * s / shards) for s in range(shards + 1)]
    out = []
    starts = np.cumsum([0] + list(counts))
    for s in range(shards):
        lo, hi, piece = bounds[s], bounds[s + 1], []
        for f, c in enumerate(counts):
            a, b = max(lo, starts[f]), min(hi, starts[f] + c)
            if a < b:
                piece.append((f, int(a - starts[f]), int(b - starts[f])))
        if piece:
            out.append(piece)
    return out


def build_shard(template, slices: list[tuple[str, int, int]], holdout: set, shard_no: int, id_start: int,
                out_dir: str, threads: int) -> dict:
    """Ray task body: add this shard's vectors to the trained template; write index + metadata."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipl.index.faiss_index import fill_shard

    tables = []
    for f, a, b in slices:
        t = pq.read_table(f)
        tables.append(t.filter(pa.array(_kept(t, holdout))).slice(a, b - a))
    table = pa.concat_tables(tables)
    vectors = arrow_to_vectors(table.column("embedding"))
    index = fill_shard(template, vectors, threads)
    name = f"shard-{shard_no:03d}"
    faiss.write_index(index, str(Path(out_dir) / f"{name}.faiss"))
    meta = {"id": pa.array(np.arange(id_start, id_start + len(table), dtype=np.int64))}
    for dst, src in META_SOURCE.items():
        meta[dst] = table.column(src) if src in table.column_names else pa.nulls(len(table), pa.string())
    pq.write_table(pa.table(meta), str(Path(out_dir) / f"{name}.parquet"))
    return {"index": f"{name}.faiss", "metadata": f"{name}.parquet", "id_start": id_start,
            "id_end": id_start + len(table), "ntotal": int(index.ntotal)}


def training_sample(files: list[Path], holdout: set, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` indexed vectors to train the coarse quantizer on, the same for the same listings
    however the embedding pass ordered its files and rows: files in name order, the rows read sorted
    by listing id, then a seeded permutation (FAISS's k-means starts from the sample's order, and a
    different quantizer moves the approximate hits that calibrate the evidence)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids, parts, have = [], [], 0
    for f in sorted(files, key=str):
        t = pq.read_table(f, columns=["listing_id", "embed_error", "embedding"])
        t = t.filter(pa.array(_kept(t, holdout)))
        ids += t.column("listing_id").to_pylist()
        parts.append(arrow_to_vectors(t.column("embedding")))
        have += t.num_rows
        if have >= n:
            break
    if not parts:
        return np.zeros((0, 1), np.float32)
    sample = np.concatenate(parts)[np.argsort(np.array(ids, dtype=object), kind="stable")]
    return sample[rng.permutation(len(sample))[:n]]


def build_shards(cfg: IndexConfig, emb_dir: Path, holdout: set, staged: Path, dim: int) -> tuple[list, dict]:
    import pyarrow.parquet as pq
    import ray

    from ipl.index.faiss_index import trained_template

    files = sorted(emb_dir.glob("*.parquet"))
    counts, errors = [], Counter()
    for f in files:
        t = pq.read_table(f, columns=["listing_id", "embed_error"])
        counts.append(int(_kept(t, holdout).sum()))
        errors.update(e for e in t.column("embed_error").to_pylist() if e is not None)
    n = sum(counts)
    if n == 0:
        raise RuntimeError(f"no listing could be embedded ({dict(errors)})")
    spec = factory_string(cfg.faiss.type, dim, n, cfg.faiss.nlist, cfg.faiss.pq_m, cfg.faiss.pq_bits,
                          cfg.faiss.hnsw_m)
    t0 = time.monotonic()
    sample = training_sample(files, holdout, cfg.faiss.train_sample, cfg.eval.seed)
    if cfg.faiss.train_num_gpus:  # k-means on a GPU worker (FAISS's GPU build), never on the driver
        train = ray.remote(num_gpus=cfg.faiss.train_num_gpus, num_cpus=1, max_retries=0)(trained_template)
        template = ray.get(train.remote(spec, dim, sample, cfg.faiss.ef_construction, cfg.faiss.gpu))
    else:
        template = trained_template(spec, dim, sample, cfg.faiss.ef_construction, cfg.faiss.gpu)
    log.info("index %s: trained on a sample in %.1fs", spec, time.monotonic() - t0)
    groups = plan_shards(counts, cfg.faiss.shards)
    starts = np.cumsum([0] + [sum(b - a for _, a, b in g) for g in groups])[:-1]
    task = ray.remote(num_cpus=cfg.faiss.shard_cpus)(build_shard)
    t_ref, h_ref = ray.put(template), ray.put(holdout)
    refs = [task.remote(t_ref, [(str(files[f]), a, b) for f, a, b in g], h_ref, s, int(starts[s]), str(staged),
                        max(1, int(cfg.faiss.shard_cpus))) for s, g in enumerate(groups)]
    shards = ray.get(refs)
    return shards, {"spec": spec, "vectors": n, "embed_errors": dict(errors), "build_s": time.monotonic() - t0}


# -- 5. evaluation -------------------------------------------------------------------------------
def evaluate(index, vectors: np.ndarray, meta: dict, predicted: list, zero_shot, cfg: IndexConfig, levels,
             photo: Optional[list] = None, served: Optional[list] = None) -> dict:
    """Retrieval and category figures of the held-out photos, and the evidence calibration.
    ``predicted``: each photo's (category, score) as the calibration reads it; ``served``: the served
    head's, when those differ (``category.crossfit_calibration``), reported beside it."""
    from ipl.evidence.fit import calibrate
    from ipl.extract.matcher import value_key
    from ipl.index.calibration import key_values

    if len(vectors) == 0:
        return {"queries": 0}
    scores, ids = index.search_raw(vectors, 5)
    top = index.metadata.loc[ids[:, 0]]
    sku_ok = np.array(top["sku_id"].tolist()) == np.array(meta["sku_id"])
    spu_ok = np.array(top["spu_id"].tolist()) == np.array(meta["spu_id"])
    cat = np.array(meta["category"])
    key = cfg.evidence.colour_key or "Color"
    # a listing's colour is its SKU's (what most of the SKU's listings state), so a hit whose own text
    # leaves the colour out is judged by the colour it has; ``_text``: only what the hit's text states
    stated, own = key_values(top["attributes"].tolist(), key), key_values(meta["extracted"], key)
    by_sku = index.sku_values(key)

    def same_spu_colour(theirs: list, ours: list) -> float:
        same = [o is not None and t is not None and value_key(t) == value_key(o) for t, o in zip(theirs, ours)]
        return float(np.sum(spu_ok & np.array(same, dtype=bool)) / max(1, sum(o is not None for o in ours)))
    out = {"queries": int(len(vectors)), "identical_top1": float(sku_ok.mean()), "similar_top1": float(spu_ok.mean()),
           "same_spu_colour_top1": same_spu_colour([by_sku.get(s) or t for s, t in zip(top["sku_id"].tolist(), stated)],
                                                   [o or by_sku.get(s) for o, s in zip(own, meta["sku_id"])]),
           "same_spu_colour_top1_text": same_spu_colour(stated, own),
           "identical_top5": float(np.mean([s in set(index.metadata.loc[row[row >= 0]]["sku_id"]) for s, row in
                                            zip(meta["sku_id"], ids)]))}
    out["category_top1"] = float((np.array([p[0] for p in predicted]) == cat).mean())
    if served is not None and served is not predicted:
        out["category_top1_served_head"] = float((np.array([p[0] for p in served]) == cat).mean())
    e = cfg.evidence
    out["evidence"] = calibrate(evidence_queries(index, vectors, meta, predicted, e.k, photo), levels,
                                e.target_precision, e.min_support, e.k, e.tau, e.alpha, e.ood_quantile,
                                e.key_min_candidates, e.score_search, e.level_targets)
    if zero_shot is not None:
        pred = np.array([p[0]["category"] for p in zero_shot.predict(vectors, 1)])
        out["category_top1_zero_shot"] = float((pred == cat).mean())
    return out


def caption_part(cfg: IndexConfig, clip, index, staged: Path, vecs, meta, predicted: list, known, levels,
                 result: dict, photo: Optional[list] = None, evaluated: Optional[set] = None) -> dict:
    """Offline captions, the text index and the held-out caption evaluation (``caption.enabled``):
    the manifest entries; ``result`` gets ``caption`` (the evaluation) and ``caption_tiers``."""
    import faiss

    from ipl.caption.stage import PROMPT_VERSION
    from ipl.index.captions import build_text_index, evaluate_captions, run_captions

    t = time.monotonic()
    captions = run_captions(cfg, levels, evaluated=evaluated)
    log.info("captions: %d new, %d reused (%.1fs)", captions["captioned"], captions["reused"], time.monotonic() - t)
    out: dict = {"captions": captions}
    text_index = None
    if cfg.caption.text_index:
        t = time.monotonic()
        out["text_index"] = {**build_text_index(clip, staged), "build_s": round(time.monotonic() - t, 1)}
        text_index = faiss.read_index(str(staged / out["text_index"]["file"]))
        log.info("text index: %d listing descriptions in %.1fs", out["text_index"]["ntotal"], out["text_index"]["build_s"])
    t = time.monotonic()
    evaluation, tiers = evaluate_captions(cfg, clip, index, text_index, vecs, meta, predicted, known, levels,
                                          result.get("evidence") or {}, photo)
    result["caption"], result["caption_tiers"] = evaluation, tiers
    log.info("caption evaluation on the held-out queries and the caption tiers in %.1fs", time.monotonic() - t)
    out["caption"] = {"judges": list(cfg.caption.cqe.judges), "encoder_threshold": evaluation.get("encoder_threshold"),
                      "fusion_k": cfg.caption.fusion_k, "text_weight": cfg.caption.text_weight,
                      "prompt_version": PROMPT_VERSION}
    return out


def same_product_ranking(clip, folder: Path) -> dict:
    """Leave-one-out over photo groups (one sub-folder per product): is a same-product photo first,
    and do all same-product photos rank above every other product's?"""
    from PIL import Image

    groups = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    paths, owner = [], []
    for g in groups:
        for p in sorted(g.glob("*.jpg")) + sorted(g.glob("*.png")):
            paths.append(p)
            owner.append(g.name)
    if len(set(owner)) < 2:
        raise FileNotFoundError(f"{folder}: needs at least 2 product folders of photos")
    v = clip.encode_images([Image.open(p).convert("RGB") for p in paths]).numpy()
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    owner = np.array(owner)
    first, all_first = [], []
    for i in range(len(paths)):
        order = np.argsort(-sim[i])[:-1]
        same = owner[order] == owner[i]
        first.append(bool(same[0]))
        n_same = int(same.sum())
        all_first.append(bool(same[:n_same].all()) if n_same else False)
    return {"photos": len(paths), "products": len(groups), "top1_same_product": float(np.mean(first)),
            "all_same_product_first": float(np.mean(all_first))}


# -- the stage -------------------------------------------------------------------------------------
def build(cfg: IndexConfig) -> dict:
    import pyarrow.dataset as pds

    from ipl.index.category import CategoryPredictor, crossfit_categories, save_head, train_head
    from ipl.index.finetune import finetune
    from ipl.index.search import ShardedIndex
    from ipl.models.clip import load_clip

    root = cfg.index_root
    files = listing_files(cfg)
    if cfg.caption.enabled:  # before any work: captions need the fine-tuned VLM
        from ipl.index.captions import vlm_dir_of
        from ipl.models.vlm import require_local_dir

        require_local_dir(vlm_dir_of(cfg), "caption VLM", "train it first with `ipl train`, or set caption.vlm, "
                          "or caption.enabled=false")
    table = pds.dataset([str(f) for f in files], format="parquet").to_table(columns=["listing_id", "sku_id"])
    holdout = choose_holdout(table.column("listing_id").to_pylist(), table.column("sku_id").to_pylist(),
                             cfg.eval.holdout_fraction, cfg.eval.seed)
    untrained = untrained_listings(cfg, table.column("listing_id").to_pylist(), table.column("sku_id").to_pylist())
    ray = ensure_ray(cfg.ray)
    summary: dict = {"listings": table.num_rows, "holdout": len(holdout), "untrained": len(untrained)}
    t0 = time.monotonic()
    if cfg.encoder.finetune:
        summary["finetune"] = finetune(cfg, holdout, untrained)
        clip_source, weights = str(cfg.clip_dir), None
        summary["finetune"]["seconds"] = round(time.monotonic() - t0, 1)
    else:
        clip_source, weights = cfg.base_clip, cfg.encoder.weights
    clip = load_clip(clip_source, weights)
    key = build_key(cfg, clip.fingerprint, untrained)
    cur = current_version(root)
    if cur and not cfg.rebuild and (root / cur / MANIFEST).is_file():
        manifest = read_manifest(root / cur)
        if manifest.get("build_key") == key:
            log.warning("index %s was built from the same listings, encoder and settings: reusing it "
                        "(rebuild=true builds a new version)", root / cur)
            return {**manifest, "reused": True}
    version = next_version(root)
    staged = staging_dir(root, version)
    try:
        t1 = time.monotonic()
        emb_dir, reused = embeddings_for(cfg, clip_source, weights, clip.fingerprint)
        embed_s = time.monotonic() - t1
        hold = set(holdout)
        shards, info = build_shards(cfg, emb_dir, hold, staged, clip.dim)
        manifest = {"version": version, "dimension": clip.dim, "metric": INNER_PRODUCT, "index_type": cfg.faiss.type,
                    "factory": info["spec"], "ntotal": info["vectors"], "shards": shards,
                    "search": {"nprobe": cfg.faiss.nprobe, "ef_search": cfg.faiss.ef_search},
                    "encoder": {"source": clip_source, "fingerprint": clip.fingerprint}, "build_key": key,
                    "build": {"embed_s": round(embed_s, 1), "embeddings_reused": reused,
                              "shards_s": round(info["build_s"], 1),
                              "embed_errors": info["embed_errors"], "untrained": len(untrained)}}
        write_json_atomic(staged / MANIFEST, manifest)
        trained_out = hold | set(untrained)  # what the heads may not learn from
        train_vecs, train_meta = load_embeddings(emb_dir, trained_out, held_out=False,
                                                 columns=("listing_id", "category", "sku_id"))
        c = cfg.category
        head = ray.get(ray.remote(num_cpus=1)(train_head).remote(
            train_vecs, train_meta["category"], c.epochs, c.lr, c.weight_decay, seed=cfg.eval.seed))
        tmp_cat = cfg.category_dir.with_name(f".{cfg.category_dir.name}.tmp")
        shutil.rmtree(tmp_cat, ignore_errors=True)
        save_head(head, tmp_cat, clip.fingerprint)
        predictor = CategoryPredictor.load(clip, tmp_cat)
        zero_shot = CategoryPredictor(clip, None, head["classes"], c.prompt)
        index = ShardedIndex.load(staged, dim=clip.dim, fingerprint=clip.fingerprint)
        vecs, meta = load_embeddings(emb_dir, hold, held_out=True,
                                     columns=("listing_id", "sku_id", "spu_id", "category", "extracted", "description"))
        levels = key_levels(cfg)
        colour = train_colour(cfg, emb_dir, trained_out)
        photo = [{} for _ in range(len(vecs))]
        if colour is not None:
            feats, _ = load_embeddings(emb_dir, hold, held_out=True, columns=("listing_id",), vector="colour")
            for p, pred in zip(photo, colour[1].predict_features(feats, 3)):
                p[colour[0]["key"]] = pred
        # each held-out photo's category as the served head predicts it, and (what the calibration and
        # every use below read) as a head that never saw the photo's SKU predicts it
        served = [(p[0]["category"], float(p[0]["score"])) for p in predictor.predict(vecs, 1)] if len(vecs) else []
        predicted = served
        if c.crossfit_calibration and len(vecs):
            predicted = ray.get(ray.remote(num_cpus=1)(crossfit_categories).remote(
                train_vecs, train_meta["category"], train_meta["sku_id"], vecs, meta["sku_id"], c.epochs, c.lr,
                c.weight_decay, seed=cfg.eval.seed))
        product = train_product(cfg, emb_dir, trained_out, levels, vecs, meta, [c for c, _ in predicted]) \
            if len(vecs) else None
        for p, pred in zip(photo, product[1] if product is not None else ()):
            p.update(pred)
        result = evaluate(index, vecs, meta, predicted, zero_shot, cfg, levels, photo, served)
        known = vocabulary(emb_dir, hold)
        leads, elsewhere = guard_words(emb_dir, hold, known, levels)
        if cfg.caption.enabled:
            manifest.update(caption_part(cfg, clip, index, staged, vecs, meta, predicted, known, levels, result,
                                         photo, evaluated=trained_out))
        index.close()
        result["category_train_accuracy"] = head["train_accuracy"]
        if cfg.eval.same_product_dir:
            result["same_product"] = same_product_ranking(clip, Path(cfg.eval.same_product_dir))
        evidence = result.pop("evidence", None) or {}
        if result.get("caption_tiers"):  # the caption:* tiers join the evidence model's
            extra = result.pop("caption_tiers")
            evidence["tiers"] = {**evidence.get("tiers", {}), **extra}
            evidence["disabled"] = sorted({*evidence.get("disabled", []),
                                           *(n for n, t in extra.items() if not t.get("enabled"))})
            if (result.get("caption") or {}).get("gain") is not None:  # what captions add to the other bases
                evidence["caption_gain"] = result["caption"]["gain"]
        tier = (evidence.get("tiers") or {}).get("identical") or {}
        threshold = cfg.identical_threshold if cfg.identical_threshold is not None else \
            (tier.get("threshold") if tier.get("enabled") else None)
        write_json_atomic(staged / VOCABULARY, known)
        if product is not None:
            from ipl.index.product import ProductPredictor, save_product_heads

            save_product_heads(product[0], staged, clip.fingerprint)
            result["product_heads"] = ProductPredictor(product[0]).summary()
        if colour is not None:
            from ipl.index.colour import save_colour_head

            save_colour_head(colour[0], staged, colour[0]["key"])
            result["colour_head"] = {"key": colour[0]["key"], "values": len(colour[0]["classes"]),
                                     "train_accuracy": round(colour[0]["train_accuracy"], 4),
                                     "trained": colour[0].get("trained")}
        manifest.update({"thresholds": {"identical": threshold, "calibrated": cfg.identical_threshold is None},
                         "target_precision": cfg.evidence.target_precision, "evidence": evidence,
                         "vocabulary": VOCABULARY, "leading_words": leads,
                         "category_words": elsewhere, "eval": result, "category_head": str(cfg.category_dir)})
        if evidence.get("disabled"):
            log.warning("evidence tiers DISABLED (they state nothing): %s", ", ".join(
                f"{n} ({evidence['tiers'][n].get('reason')})" for n in evidence["disabled"]))
        if cfg.category_dir.exists():
            shutil.rmtree(cfg.category_dir)
        tmp_cat.rename(cfg.category_dir)

        final = publish(root, staged, manifest, keep=cfg.keep_versions)
        drop_other_embeddings(root, emb_dir if cfg.embed.keep else None)
    finally:  # the embeddings stay (a failed build's re-run reads them); the staged version does not
        shutil.rmtree(staged, ignore_errors=True)
    summary.update(read_manifest(final))
    return summary


def main(cfg: IndexConfig) -> int:
    import sys

    from ipl.index.manifest import IndexIntegrityError

    try:
        return _main(cfg)
    except IndexIntegrityError as exc:
        print(f"ipl index: {exc}", file=sys.stderr)
        return 1


def _main(cfg: IndexConfig) -> int:
    root = cfg.index_root
    if cfg.action == "rollback":
        version = rollback(root)
        print(f"index rolled back: current is {root / version}")
        return 0
    if cfg.action == "verify":
        from ipl.index.search import ShardedIndex

        index = ShardedIndex.load(root)
        print(f"index {index.version_dir}: verified {len(index.shards)} shards, {index.ntotal} vectors, dim {index.dim}")
        return 0
    from ipl.index.report import report

    print(report(build(cfg)))
    return 0
