"""Ray Data composer of ``ipl synth``: the synthetic marketplace as resumable Parquet shards.

``ray.data.range(num_shards)`` + ``map_batches(write_shard)``: each task generates one
shard's rows with :class:`~ipl.synth.generate.ListingFactory` and writes
``<run>/raw/part-NNNNNN.parquet`` through a temp file and a rename, so memory is bounded
by one shard per worker and a re-run skips shards already written. ``raw/_config.json``
records the data fingerprint (a re-run with other settings is refused unless
``overwrite=true``); ``raw/_manifest.json`` is written last, with the counts.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ipl.config import ConfigError
from ipl.runtime import Progress, ensure_ray, read_json, write_json_atomic
from ipl.synth.config import SynthConfig
from ipl.synth.generate import ListingFactory

log = logging.getLogger("ipl.synth")


def shard_path(raw_dir: Path, shard: int) -> Path:
    return raw_dir / f"part-{shard:06d}.parquet"


def write_shard(batch: dict, cfg_json: str, raw_dir: str) -> dict:
    """Generate and write the shards in ``batch['id']``; returns one summary row each."""
    cfg = SynthConfig.model_validate_json(cfg_json)
    out = {"shard": [], "rows": [], "reasons": [], "categories": [], "bytes": [], "skipped": []}
    factory = None
    for shard in batch["id"].tolist():
        path = shard_path(Path(raw_dir), shard)
        start, stop = shard * cfg.shard_rows, min(cfg.rows, (shard + 1) * cfg.shard_rows)
        skipped = path.exists()
        if skipped:
            table = pq.read_table(path, columns=["dirty_reason", "category"])
        else:
            factory = factory or ListingFactory(cfg)
            table = factory.table(start, stop)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
        if table.num_rows != stop - start:
            raise RuntimeError(f"{path}: has {table.num_rows} rows, expected {stop - start}; delete it and re-run")
        reasons = Counter(r or "clean" for r in table.column("dirty_reason").to_pylist())
        cats = Counter(table.column("category").to_pylist())
        out["shard"].append(shard)
        out["rows"].append(table.num_rows)
        out["reasons"].append(json.dumps(reasons))
        out["categories"].append(json.dumps(cats))
        out["bytes"].append(path.stat().st_size)
        out["skipped"].append(skipped)
    return {k: np.array(v) for k, v in out.items()}


def _prepare_dir(cfg: SynthConfig, raw_dir: Path) -> bool:
    """Check/record the data fingerprint; returns True when raw/ is already complete."""
    fingerprint = cfg.data_fingerprint()
    cfg_file, manifest = raw_dir / "_config.json", raw_dir / "_manifest.json"
    if cfg_file.exists():
        recorded = read_json(cfg_file)
        if recorded.get("fingerprint") != fingerprint:
            if not cfg.overwrite:
                old = recorded.get("config", {})
                new = cfg.data_record()
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ConfigError(
                    f"{raw_dir} was generated with different settings (differ in: {', '.join(diff)}); "
                    f"pass overwrite=true to replace it or choose another run.name"
                )
            log.warning("overwrite=true: removing %s generated with other settings", raw_dir)
            shutil.rmtree(raw_dir)
        elif manifest.exists():
            return True
    raw_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        cfg_file,
        {"fingerprint": fingerprint, "config": cfg.data_record()},
    )
    return False


def run_synth_data(cfg: SynthConfig) -> dict:
    """Write ``<run>/raw/`` (resuming a partial run); returns the manifest."""
    raw_dir = cfg.run.dir / "raw"
    if _prepare_dir(cfg, raw_dir):
        manifest = read_json(raw_dir / "_manifest.json")
        log.info("synth: %s is complete (%d rows), reusing it", raw_dir, manifest["rows"])
        return manifest
    ray = ensure_ray(cfg.ray)
    num_shards = (cfg.rows + cfg.shard_rows - 1) // cfg.shard_rows
    ds = ray.data.range(num_shards, override_num_blocks=num_shards).map_batches(
        write_shard,
        batch_size=1,
        fn_kwargs={"cfg_json": cfg.model_dump_json(), "raw_dir": str(raw_dir.resolve())},
    )
    progress = Progress("synth rows", cfg.rows)
    reasons: Counter = Counter()
    cats: Counter = Counter()
    rows = size = skipped = done = 0
    for summary in ds.iter_rows():
        done += 1
        rows += int(summary["rows"])
        size += int(summary["bytes"])
        skipped += int(summary["skipped"])
        reasons.update(json.loads(summary["reasons"]))
        cats.update(json.loads(summary["categories"]))
        progress.update(rows, force=done == num_shards)
    if rows != cfg.rows:
        raise RuntimeError(f"synth wrote {rows} rows, expected {cfg.rows}")
    manifest = {
        "rows": rows,
        "shards": num_shards,
        "shards_reused": skipped,
        "bytes": size,
        "fingerprint": cfg.data_fingerprint(),
        "language": cfg.language,
        "dirty_reasons": dict(sorted(reasons.items())),
        "categories": dict(sorted(cats.items())),
    }
    write_json_atomic(raw_dir / "_manifest.json", manifest)
    log.info("synth: wrote %d rows in %d shards (%d reused) to %s", rows, num_shards, skipped, raw_dir)
    return manifest
