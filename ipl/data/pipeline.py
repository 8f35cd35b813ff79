"""Ray Data composer of ``ipl prepare``: clean -> extract -> mine templates -> instructions.

Passes (cheap work first, photos read once):

1. **text** (photo columns not read): :class:`~ipl.data.clean.TextFilters` on every row,
   then near-duplicates by MinHash-LSH (``groupby(band).map_groups``), then the stratified
   sample. Rejected rows go to ``clean/dropped/text`` (reason + detail) or
   ``clean/quarantine/text`` (error); the driver keeps only counts and the duplicate map.
2. **photos** (survivors only): the same deterministic text decisions are re-applied, then
   image-text consistency (open_clip actor pool) and attribute extraction (gazetteer +
   optional LLM actors); written by status: ``clean/listings`` (kept),
   ``clean/dropped/photo``, ``clean/quarantine/photo``.
3. **templates**: mention statistics over the kept rows -> ``templates.yaml``.
4. **instructions**: ChatML rows split by SKU -> ``instructions/split=train|validation`` and a
   LLaMA-Factory export.

Each part is written to a temp directory and renamed; its marker file records a fingerprint
of its inputs and settings, so a re-run reuses what is up to date and redoes the rest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ipl.extract.gazetteer import build_checked_library
from ipl.catalog.templates import TemplateStats, load_levels, load_templates, mine_templates, write_templates
from ipl.data.arrow import plain_lists, to_table
from ipl.data.clean import TextFilters
from ipl.data.config import PrepareConfig
from ipl.data.consistency import ClipConsistency
from ipl.data.contract import is_null, nulls_to_none
from ipl.data.dedup import explode_bands, mark_duplicates
from ipl.data.export import export_llamafactory
from ipl.data.instructions import MakeInstructions, unit_hash
from ipl.data.read import ensure_photo_bytes, input_path, read_listings
from ipl.extract.stage import ExtractAttributes
from ipl.config import ConfigError
from ipl.models.feature_cache import RUN_CACHE as FEATURE_CACHE
from ipl.runtime import ensure_ray, read_json, write_json_atomic

log = logging.getLogger("ipl.prepare")

PHOTO_COLUMNS = ("photos", "photo_paths")
PIPELINE_VERSION = "3"  # bump when the outputs' meaning changes, so old outputs are not reused
SCORE_BINS = np.round(np.linspace(-1, 1, 41), 2)


# ---------------------------------------------------------------- batch functions
def text_filter_batch(batch: dict, cfg) -> dict:
    return plain_lists(TextFilters(cfg)(batch))  # the photos column passes through: a list type, never pickled


def decide(batch: dict, dups: dict, fractions: dict, seed: int) -> dict:
    """Final text-level status per row: kept / dropped (reason) / quarantined (error)."""
    n = len(batch["listing_id"])
    status, reasons, details = [], nulls_to_none(batch["drop_reason"]), nulls_to_none(batch["drop_detail"])
    errors = nulls_to_none(batch["error"])
    for i in range(n):
        lid = str(batch["listing_id"][i])
        if errors[i] is not None:
            status.append("quarantined")
            continue
        if reasons[i] is None and lid in dups:
            reasons[i], details[i] = "near_duplicate", str(dups[lid])
        if reasons[i] is None:
            frac = fractions.get(str(batch["category"][i]), 1.0)
            if frac < 1.0 and unit_hash(str(seed), "sample", lid) >= frac:
                reasons[i], details[i] = "sampled_out", f"{frac:.3f}"
        status.append("kept" if reasons[i] is None else "dropped")
    out = dict(batch)
    out["status"], out["drop_reason"], out["drop_detail"], out["error"] = status, reasons, details, errors
    return plain_lists(out)


def obj_array(values) -> np.ndarray:
    """A 1-D object array (np.asarray would make equal-length lists 2-D)."""
    values = list(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def where(batch: dict, column: str, values: tuple) -> dict:
    keep = np.array([v in values for v in batch[column]], dtype=bool)
    return plain_lists({k: (v if isinstance(v, np.ndarray) else obj_array(v))[keep] for k, v in batch.items()})


def candidates(batch: dict) -> dict:
    ok = np.array([is_null(r) and is_null(e) for r, e in zip(batch["drop_reason"], batch["error"])], dtype=bool)
    sigs = np.stack([np.asarray(s, dtype=np.int64) for s in batch["minhash"]]) if len(ok) else np.zeros((0, 1), np.int64)
    return {"listing_id": np.asarray(batch["listing_id"], dtype=object)[ok], "minhash": sigs[ok]}


def consistency_threshold(cc, clip: str) -> float:
    """The configured threshold, else the one calibrated for ``clip``; a clear error when neither."""
    from ipl.models.clip import calibrated_consistency

    if cc.threshold is not None:
        return cc.threshold
    value = calibrated_consistency(clip)
    if value is None:
        raise ValueError(f"consistency.threshold is null and CLIP {clip} has no calibrated threshold "
                         "(ipl synth writes one for the base CLIP): set consistency.threshold")
    return value


def apply_clip(batch: dict, threshold: float) -> dict:
    status, reasons, details = list(batch["status"]), nulls_to_none(batch["drop_reason"]), nulls_to_none(batch["drop_detail"])
    for i, (score, err) in enumerate(zip(batch["clip_score"], nulls_to_none(batch["error"]))):
        if err is not None:
            status[i] = "quarantined"
        elif not np.isnan(score) and score < threshold:
            status[i], reasons[i], details[i] = "dropped", "image_text_mismatch", f"{score:.3f}"
    out = dict(batch)
    out["status"], out["drop_reason"], out["drop_detail"] = status, reasons, details
    return plain_lists(out)


class TypedExtractAttributes(ExtractAttributes):
    """The extraction stage with its output's list columns as plain lists (:func:`plain_lists`)."""

    def __call__(self, batch: dict) -> dict:
        return plain_lists(super().__call__(batch))


def drop_columns(batch: dict, names: tuple) -> dict:
    return plain_lists({k: v for k, v in batch.items() if k not in names})


# ---------------------------------------------------------------- helpers
def input_fingerprint(cfg: PrepareConfig) -> str:
    path = input_path(cfg.input, cfg.run.dir)
    manifest = path / "_manifest.json"
    if path.is_dir() and manifest.exists():
        return read_json(manifest).get("fingerprint", "")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = json.dumps([(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in files])
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def fresh(dir_: Path) -> Path:
    if dir_.exists():
        shutil.rmtree(dir_)
    dir_.mkdir(parents=True)
    return dir_


def move_partition(src_root: Path, status: str, dst: Path) -> None:
    src = src_root / f"status={status}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.exists():
        src.rename(dst)
    else:
        dst.mkdir(parents=True, exist_ok=True)


def read_dir(path: Path, columns: Optional[list[str]] = None):
    import ray

    files = sorted(str(p) for p in path.rglob("*.parquet"))
    if not files:
        return None
    ds = ray.data.read_parquet(files)
    return ds.select_columns(columns) if columns else ds


def iter_rows(path: Path, columns: list[str]):
    ds = read_dir(path, columns)
    if ds is None:
        return
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=4096):
        yield from batch.to_pylist()


def histogram(scores: list[float]) -> dict:
    arr = np.array([s for s in scores if s is not None and not np.isnan(s)], dtype=float)
    if arr.size == 0:
        return {}
    counts, _ = np.histogram(arr, bins=SCORE_BINS)
    return {
        "count": int(arr.size),
        "quantiles": {q: round(float(np.quantile(arr, float(q))), 4) for q in ("0.01", "0.05", "0.25", "0.5", "0.75")},
        "bins": [[float(SCORE_BINS[i]), int(c)] for i, c in enumerate(counts) if c],
    }


# ---------------------------------------------------------------- parts
def clean_part(cfg: PrepareConfig, key: str) -> dict:
    import ray

    run_dir = cfg.run.dir
    tmp = fresh(run_dir / ".clean.tmp")
    ds_text, names = read_listings(cfg.input, run_dir, exclude=PHOTO_COLUMNS)
    has_photos = any(c in names for c in PHOTO_COLUMNS)
    text = ds_text.map_batches(text_filter_batch, fn_kwargs={"cfg": cfg.clean}, batch_size=cfg.batch_size)
    text = text.materialize()
    log.info("prepare: text filters done on %d rows", text.count())

    dups: dict[str, str] = {}
    if cfg.clean.dedup.enabled:
        bands = text.map_batches(candidates, batch_size=cfg.batch_size).map_batches(
            explode_bands, fn_kwargs={"cfg": cfg.clean.dedup}, batch_size=cfg.batch_size)
        # a few partitions per CPU: Ray's default (200) makes 200 reduce tasks even for small inputs
        partitions = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        found = bands.groupby("band", num_partitions=partitions).map_groups(
            mark_duplicates, fn_kwargs={"threshold": cfg.clean.dedup.threshold}, batch_format="numpy")
        for b in found.iter_batches(batch_format="numpy"):
            for lid, of in zip(b["listing_id"], b["duplicate_of"]):
                dups.setdefault(str(lid), str(of))
        log.info("prepare: %d near-duplicate descriptions", len(dups))

    rows_in, survivors, pii = 0, Counter(), Counter()
    for b in text.select_columns(["listing_id", "category", "drop_reason", "error", "pii"]).iter_batches(
            batch_format="pyarrow", batch_size=8192):
        for r in b.to_pylist():
            rows_in += 1
            pii.update(r["pii"] or [])
            if r["error"] is None and r["drop_reason"] is None and r["listing_id"] not in dups:
                survivors[r["category"]] += 1
    target = cfg.sample.per_category
    fractions = {c: min(1.0, target / n) for c, n in survivors.items()} if target else {}
    decided = text.map_batches(decide, fn_kwargs={"dups": dups, "fractions": fractions, "seed": cfg.sample.seed},
                               batch_size=cfg.batch_size)
    rejected = decided.map_batches(where, fn_kwargs={"column": "status", "values": ("dropped", "quarantined")},
                                   batch_size=cfg.batch_size)
    rejected.map_batches(drop_columns, fn_kwargs={"names": ("minhash", "text")}).map_batches(to_table).write_parquet(
        str(tmp / "_text"), partition_cols=["status"])
    move_partition(tmp / "_text", "dropped", tmp / "dropped" / "text")
    move_partition(tmp / "_text", "quarantined", tmp / "quarantine" / "text")

    # library (a 'column' source learns from non-eval rows only)
    library_rows = None
    if any(s.type == "column" for s in cfg.library.sources):
        cols = ["listing_id", "category"] + sorted({s.column for s in cfg.library.sources if s.column})
        cols += ["text"] if any(s.min_precision > 0 for s in cfg.library.sources) else []  # the learned values' check
        library_rows = [r for r in text.select_columns(cols).take_all()
                        if not (cfg.eval.ground_truth and unit_hash("eval", r["listing_id"]) < cfg.eval.fraction)]
    library = build_checked_library(cfg.library, library_rows)

    # pass 2: survivors with photos
    full, _ = read_listings(cfg.input, run_dir)
    p2 = (full.map_batches(text_filter_batch, fn_kwargs={"cfg": cfg.clean}, batch_size=cfg.batch_size)
          .map_batches(decide, fn_kwargs={"dups": dups, "fractions": fractions, "seed": cfg.sample.seed},
                       batch_size=cfg.batch_size)
          .map_batches(where, fn_kwargs={"column": "status", "values": ("kept",)}, batch_size=cfg.batch_size))
    checked = has_photos and cfg.consistency.enabled
    threshold = cfg.consistency.threshold
    if checked:
        cc = cfg.consistency
        clip = cc.clip or str(run_dir / "models" / "clip-base")
        threshold = consistency_threshold(cc, clip)
        p2 = p2.map_batches(ensure_photo_bytes, batch_size=cc.batch_size)
        # blocks of a few batches, so that every actor of the pool gets work: with the read's
        # input.block_rows (2,000) blocks, the first actor to start took both blocks of the demo's
        # 4,000 rows and the second stayed idle (the check took twice as long)
        p2 = p2.repartition(target_num_rows_per_block=cc.batch_size * 4)
        cache = str((run_dir / FEATURE_CACHE).resolve()) if cc.feature_cache else None
        p2 = p2.map_batches(ClipConsistency, fn_constructor_kwargs={"clip_source": clip, "feature_cache": cache},
                            batch_size=cc.batch_size,
                            compute=ray.data.ActorPoolStrategy(size=cc.concurrency), num_cpus=cc.num_cpus,
                            num_gpus=cc.num_gpus or None, memory=cc.memory_mb * 2**20 if cc.memory_mb else None)
        p2 = p2.map_batches(apply_clip, fn_kwargs={"threshold": threshold}, batch_size=cc.batch_size)
    llm = cfg.llm
    p2 = p2.map_batches(TypedExtractAttributes, fn_constructor_kwargs={"library_cfg": cfg.library, "llm_cfg": llm,
                                                                 "library": library},
                        batch_size=llm.batch_size if llm.backend != "none" else cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=llm.concurrency), num_cpus=llm.num_cpus,
                        num_gpus=llm.num_gpus or None)
    p2 = p2.map_batches(drop_columns, fn_kwargs={"names": ("minhash",)}, batch_size=cfg.batch_size)
    p2.map_batches(to_table, batch_size=cfg.batch_size).write_parquet(str(tmp / "_photo"), partition_cols=["status"])
    move_partition(tmp / "_photo", "kept", tmp / "listings")
    move_partition(tmp / "_photo", "dropped", tmp / "dropped" / "photo")
    move_partition(tmp / "_photo", "quarantined", tmp / "quarantine" / "photo")
    for d in ("_text", "_photo"):
        shutil.rmtree(tmp / d, ignore_errors=True)

    summary = summarize_clean(cfg, tmp, rows_in, pii, fractions, dups, has_photos, checked, key, threshold)
    summary["library"] = library.learned  # values learned from columns, and those the gazetteer's check dropped
    write_json_atomic(tmp / "summary.json", summary)
    final = run_dir / "clean"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return summary


def summarize_clean(cfg, tmp: Path, rows_in: int, pii: Counter, fractions: dict, dups: dict, has_photos: bool,
                    checked: bool, key: str, threshold: Optional[float] = None) -> dict:
    dropped = Counter()
    for part in ("text", "photo"):
        for r in iter_rows(tmp / "dropped" / part, ["drop_reason"]) or []:
            dropped[r["drop_reason"]] += 1
    quarantined = sum(1 for part in ("text", "photo") for _ in (iter_rows(tmp / "quarantine" / part, ["error"]) or []))
    gt_cols = sorted(set(cfg.eval.ground_truth.values()))
    cols = ["listing_id", "category", "text", "extract_stats", "extracted"] + (["clip_score"] if checked else []) + gt_cols
    kept_by_cat, extract, coverage, scores = Counter(), Counter(), defaultdict(Counter), []
    eval_rows = []
    for r in iter_rows(tmp / "listings", cols) or []:
        kept_by_cat[r["category"]] += 1
        extract.update(json.loads(r["extract_stats"]))
        values = json.loads(r["extracted"])
        for k in values:
            coverage[r["category"]][k] += 1
        if checked:
            scores.append(r["clip_score"])
        if cfg.eval.ground_truth and unit_hash("eval", r["listing_id"]) < cfg.eval.fraction:
            eval_rows.append({"text": r["text"], "extracted": values, **{c: r.get(c) for c in gt_cols}})
    if checked:
        scores += [r["clip_score"] for r in iter_rows(tmp / "dropped" / "photo", ["clip_score"]) or []]
    kept = sum(kept_by_cat.values())
    return {
        "key": key,
        "rows_in": rows_in,
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "quarantined": quarantined,
        "accounted": kept + sum(dropped.values()) + quarantined,
        "pii_hits": dict(sorted(pii.items())),
        "near_duplicates": len(dups),
        "sample_fractions": {c: round(f, 4) for c, f in sorted(fractions.items())},
        "kept_by_category": dict(sorted(kept_by_cat.items())),
        "image_text_check": {"ran": checked, "photos": has_photos, "threshold": threshold,
                             "scores": histogram(scores)},
        "extraction": {"llm_backend": cfg.llm.backend, "counts": dict(sorted(extract.items())),
                       "coverage": {c: {k: round(v / kept_by_cat[c], 3) for k, v in sorted(cnt.items())}
                                    for c, cnt in sorted(coverage.items())}},
        "eval": evaluate_extraction(eval_rows, cfg.eval.ground_truth) if cfg.eval.ground_truth else {},
    }


def evaluate_extraction(rows: list[dict], ground_truth: dict[str, str]) -> dict:
    """Precision/recall of extracted values against ground-truth columns.

    Over rows whose ground-truth value appears in the text (what extraction can find):
    precision = correct / predicted, recall = correct / rows. Also the rows where the value
    is absent from the text yet a value was extracted (a wrong value, or an alias the matcher
    cannot see), and ``precision_all``: correct over every prediction on a row with a
    ground-truth value, those included."""
    from ipl.extract.grounding import is_grounded
    from ipl.text.normalize import match_key

    out = {}
    for key, column in ground_truth.items():
        with_gt = [r for r in rows if r.get(column)]
        in_text = [r for r in with_gt if is_grounded(str(r[column]), r["text"])]
        predicted = [r for r in in_text if key in r["extracted"]]
        correct = [r for r in predicted if match_key(r["extracted"][key]) == match_key(str(r[column]))]
        wrong_when_absent = [r for r in with_gt if r not in in_text and key in r["extracted"]]
        out[key] = {
            "column": column,
            "eval_rows": len(rows),
            "rows_with_ground_truth": len(with_gt),
            "rows_value_in_text": len(in_text),
            "predicted": len(predicted),
            "correct": len(correct),
            "precision": round(len(correct) / len(predicted), 4) if predicted else None,
            "recall": round(len(correct) / len(in_text), 4) if in_text else None,
            "predicted_when_value_not_in_text": len(wrong_when_absent),
            "precision_all": round(len(correct) / (len(predicted) + len(wrong_when_absent)), 4)
            if predicted or wrong_when_absent else None,
        }
    return out


def templates_part(cfg: PrepareConfig, key: str) -> dict:
    stats = TemplateStats()
    for r in iter_rows(cfg.run.dir / "clean" / "listings", ["category", "extracted_meta"]) or []:
        stats.add(r["category"], json.loads(r["extracted_meta"]))
    templates = mine_templates(stats, cfg.templates)
    path = cfg.run.dir / "templates.yaml"
    write_templates(path, templates, f"{cfg.run.dir / 'clean'} ({sum(stats.listings.values())} listings)",
                    cfg.templates.levels)
    write_json_atomic(cfg.run.dir / ".templates.json", {"key": key})
    return templates


def reference_rows(rows, group_column: str, per_group: int = 4) -> dict[str, list]:
    """Per group, the (listing_id, extracted attributes) of its ``per_group`` smallest listing ids,
    sorted: the same references whatever order Ray Data wrote the kept listings' files in (the
    first four read, as before, changed a tenth of the desc_reference rows between two runs)."""
    kept: dict[str, list] = defaultdict(list)
    for r in rows:
        group, lid = kept[str(r[group_column])], str(r["listing_id"])
        if len(group) < per_group:
            group.append((lid, r["extracted"]))
            continue
        last = max(range(per_group), key=lambda i: group[i][0])
        if lid < group[last][0]:
            group[last] = (lid, r["extracted"])
    return {g: [(lid, json.loads(x)) for lid, x in sorted(v)] for g, v in kept.items()}


def instructions_part(cfg: PrepareConfig, key: str) -> dict:
    import ray

    run_dir = cfg.run.dir
    templates = load_templates(run_dir / "templates.yaml")
    levels = load_levels(run_dir / "templates.yaml")
    icfg = cfg.instructions
    listings = run_dir / "clean" / "listings"
    refs = reference_rows(iter_rows(listings, ["listing_id", icfg.group_column, "extracted"]) or [],
                          icfg.group_column)
    tmp = fresh(run_dir / ".instructions.tmp")
    ds = read_dir(listings)
    if ds is None:
        raise RuntimeError(f"no kept listings in {listings}: every row was dropped (see clean/summary.json)")
    ds = ds.map_batches(MakeInstructions, fn_constructor_kwargs={"cfg": icfg, "templates": templates,
                                                                "references": dict(refs), "levels": levels},
                        batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5)
    ds.map_batches(to_table, batch_size=cfg.batch_size).write_parquet(str(tmp), partition_cols=["split"])
    counts: dict = {"split": Counter(), "task": Counter(), "fallback": Counter()}
    for split in ("train", "validation"):
        for r in iter_rows(tmp / f"split={split}", ["task", "fallback"]) or []:
            counts["split"][split] += 1
            counts["task"][r["task"]] += 1
            if r["fallback"]:
                counts["fallback"][r["fallback"]] += 1
    manifest = {"key": key, **{k: dict(sorted(v.items())) for k, v in counts.items()}}
    final = run_dir / "instructions"
    if icfg.llamafactory_export:
        manifest["llamafactory"] = {**export_llamafactory(tmp, tmp / "llamafactory"), "dir": str(final / "llamafactory")}
    write_json_atomic(tmp / "manifest.json", manifest)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return manifest


def quality_part(cfg: PrepareConfig, key: str) -> dict:
    """The listing quality score of every cleaned listing (:mod:`ipl.data.listing_quality`):
    ``<run>/quality/scores`` (Parquet) and ``summary.json``, written to a temp dir and renamed."""
    import pyarrow.parquet as pq

    from ipl.data.listing_quality import FEATURES, score_batch

    run_dir = cfg.run.dir
    templates = load_templates(run_dir / "templates.yaml")
    listings = run_dir / "clean" / "listings"
    ds = read_dir(listings)
    if ds is None:
        raise RuntimeError(f"no kept listings in {listings}: every row was dropped (see clean/summary.json)")
    cols = [c for c in ("listing_id", "category", "title", "description", "price", "photos", "extracted",
                        "clip_score") if c in ds.schema().names]
    tmp = fresh(run_dir / ".quality.tmp")
    ds.select_columns(cols).map_batches(score_batch, fn_kwargs={"templates": templates,
                                                                "cfg": cfg.quality.model_dump()},
                                        batch_size=cfg.batch_size).write_parquet(str(tmp / "scores"))
    table = pq.read_table(tmp / "scores")
    scores = [s for s in table.column("listing_quality").to_pylist() if s is not None]
    by_cat: dict = defaultdict(list)
    for c, s in zip(table.column("category").to_pylist(), table.column("listing_quality").to_pylist()):
        if s is not None:
            by_cat[c].append(s)

    def mean(v):
        return round(sum(v) / len(v), 4) if v else None

    feature_means = {}
    for name in FEATURES:
        vals = [v for v in table.column(name).to_pylist() if v is not None]
        feature_means[name] = {"mean": mean(vals), "present": len(vals)}
    srt = sorted(scores)
    summary = {"key": key, "listings": table.num_rows, "scored": len(scores), "mean": mean(scores),
               "p10": srt[int(0.1 * (len(srt) - 1))] if srt else None, "p50": srt[len(srt) // 2] if srt else None,
               "p90": srt[int(0.9 * (len(srt) - 1))] if srt else None,
               "by_category": {c: {"n": len(v), "mean": mean(v)} for c, v in sorted(by_cat.items())},
               "features": feature_means, "weights": cfg.quality.weights}
    write_json_atomic(tmp / "summary.json", summary)
    final = run_dir / "quality"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    log.info("prepare: listing quality of %d listings: mean %s (p10 %s, p90 %s)", len(scores), summary["mean"],
             summary["p10"], summary["p90"])
    return summary


def consistency_clip_key(cfg: PrepareConfig) -> str:
    """The image-text check's CLIP (a new base CLIP re-runs the cleaning; none when it is off or absent)."""
    from ipl.models.clip import clip_fingerprint

    cc = cfg.consistency
    source = cc.clip or str(cfg.run.dir / "models" / "clip-base")
    try:
        return clip_fingerprint(source, cc.weights)[:16] if cc.enabled else ""
    except FileNotFoundError:
        return ""  # the run has no photos or no CLIP yet: the check is skipped or fails with its own error


def check_actor_cpus(cfg: PrepareConfig, cluster_cpus: float) -> None:
    """The second pass's actor pools (the image-text check, the extraction) hold their CPUs for the
    whole pass, and Ray Data's read and map tasks need 1 CPU each: with less than 1 CPU left the
    pass waits forever for a CPU (seen with two 0.5-CPU check actors beside the 0.5-CPU extractor
    on 2 CPUs). Refused up front, naming the keys; a cluster reporting no CPUs yet (an
    autoscaling head) is not checked."""
    pools = [("llm", cfg.llm.concurrency, cfg.llm.num_cpus)]
    if cfg.consistency.enabled:
        pools.insert(0, ("consistency", cfg.consistency.concurrency, cfg.consistency.num_cpus))
    held = sum(n * c for _, n, c in pools)
    if cluster_cpus and cluster_cpus - held < 1:
        detail = " + ".join(f"{name}.concurrency {n} x {name}.num_cpus {c:g}" for name, n, c in pools)
        raise ConfigError(f"prepare: the actor pools hold {held:g} of the cluster's {cluster_cpus:g} CPUs ({detail}), "
                          "leaving less than the 1 CPU a Ray Data read or map task needs: the pass would never "
                          "finish; lower those num_cpus or concurrency values (or add CPUs)")


def run_prepare(cfg: PrepareConfig) -> dict:
    """Run every part that is not up to date; returns {clean, templates, instructions}."""
    ray = ensure_ray(cfg.ray)
    check_actor_cpus(cfg, float(ray.cluster_resources().get("CPU", 0)))
    options = ray.data.DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, cfg.preserve_order
    try:
        return _run_parts(cfg)
    finally:
        options.preserve_order = before


def _run_parts(cfg: PrepareConfig) -> dict:
    run_dir = cfg.run.dir
    data_key = input_fingerprint(cfg)
    clean_key = (PIPELINE_VERSION + cfg.fingerprint("input", "clean", "sample", "consistency", "library", "llm", "eval")
                 + data_key + consistency_clip_key(cfg))
    summary_path = run_dir / "clean" / "summary.json"
    if not cfg.overwrite and summary_path.exists() and read_json(summary_path).get("key") == clean_key:
        log.info("prepare: %s is up to date, reusing it", run_dir / "clean")
        summary = read_json(summary_path)
    else:
        summary = clean_part(cfg, clean_key)
    out = {"clean": summary}
    tpl_key = clean_key + cfg.fingerprint("templates")
    marker = run_dir / ".templates.json"
    if not cfg.overwrite and marker.exists() and read_json(marker).get("key") == tpl_key and (run_dir / "templates.yaml").exists():
        log.info("prepare: templates.yaml is up to date")
        import yaml

        out["templates"] = yaml.safe_load((run_dir / "templates.yaml").read_text())["categories"]
    else:
        out["templates"] = templates_part(cfg, tpl_key)
    if cfg.quality.enabled:
        out["quality"] = reused_or_built(cfg, "quality", "summary.json", tpl_key + cfg.fingerprint("quality"),
                                         quality_part)
    if cfg.make_instructions and summary["image_text_check"]["photos"]:
        out["instructions"] = reused_or_built(cfg, "instructions", "manifest.json",
                                              tpl_key + cfg.fingerprint("instructions"), instructions_part)
    return out


def reused_or_built(cfg: PrepareConfig, part: str, record: str, key: str, build) -> dict:
    """``<run>/<part>/<record>`` when it was written with ``key`` (and not ``overwrite``), else
    ``build(cfg, key)``, which writes it."""
    path = cfg.run.dir / part / record
    if not cfg.overwrite and path.exists() and read_json(path).get("key") == key:
        log.info("prepare: %s/ is up to date", part)
        return read_json(path)
    return build(cfg, key)
