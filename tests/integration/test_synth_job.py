"""`ipl synth` on local Ray: shards + manifest, resume, refusing mismatched re-runs, tiny models."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipl.config import ConfigError, load_config
from ipl.synth.config import SynthConfig
from ipl.synth.pipeline import run_synth_data

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cfg_for(tmp_path, *overrides):
    return load_config(SynthConfig, None, [f"run.root={tmp_path}", "run.name=t", "rows=450", "shard_rows=100",
                                           "photos_max=1", "image_size=48", "models.build=false", *overrides])


def read_all(raw):
    return pq.read_table(sorted(raw.glob("part-*.parquet"))).to_pylist()


def test_shards_manifest_and_resume(ray_local, tmp_path):
    cfg = cfg_for(tmp_path)
    manifest = run_synth_data(cfg)
    raw = tmp_path / "t" / "raw"
    shards = sorted(raw.glob("part-*.parquet"))
    assert [p.name for p in shards] == [f"part-{i:06d}.parquet" for i in range(5)]
    rows = read_all(raw)
    assert len(rows) == 450 == manifest["rows"]
    assert [r["listing_id"] for r in rows] == [f"L{i:09d}" for i in range(450)]
    assert sum(manifest["dirty_reasons"].values()) == 450
    assert manifest["dirty_reasons"]["clean"] == sum(r["dirty_reason"] is None for r in rows)
    assert json.loads((raw / "_manifest.json").read_text()) == manifest

    # a second run reuses the complete directory
    assert run_synth_data(cfg) == manifest

    # an interrupted run (a shard and the manifest missing) resumes and regenerates only that shard
    before = shards[2].read_bytes()
    shards[2].unlink()
    (raw / "_manifest.json").unlink()
    mtime = shards[0].stat().st_mtime_ns
    again = run_synth_data(cfg)
    assert again["shards_reused"] == 4
    assert shards[0].stat().st_mtime_ns == mtime
    assert read_all(raw) == rows
    assert pq.read_table(shards[2]).to_pylist() == pq.read_table(pa.BufferReader(before)).to_pylist()


def test_mismatched_rerun_refused_then_overwrite(ray_local, tmp_path):
    run_synth_data(cfg_for(tmp_path))
    with pytest.raises(ConfigError, match=r"differ in: seed"):
        run_synth_data(cfg_for(tmp_path, "seed=3"))
    manifest = run_synth_data(cfg_for(tmp_path, "seed=3", "overwrite=true"))
    assert manifest["rows"] == 450 and manifest["shards_reused"] == 0


def test_job_entrypoint_builds_tiny_models(tmp_path):
    """jobs/synth.py as `ray job submit` runs it: a fresh process with its own local Ray."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(REPO / "jobs" / "synth.py"), "--config", str(REPO / "jobs/configs/synth_local.yaml"),
           f"run.root={tmp_path}", "run.name=job", "rows=300", "shard_rows=150", "models.vocab_size=600",
           "models.vlm.hidden_size=64", "models.vlm.intermediate_size=128", "models.vlm.num_hidden_layers=1",
           "models.clip_pretrain_steps=10", "models.clip_pretrain_rows=100",
           "models.vlm_pretrain_steps=30", "models.vlm_pretrain_batch_size=4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "raw listings: 300 rows in 2 shards" in out.stdout
    synonyms = json.loads((tmp_path / "job" / "raw" / "_synonyms.json").read_text())  # for the eval's matcher
    assert ["Huawei", "华为"] in synonyms
    models = tmp_path / "job" / "models"
    for sub, f in (("tokenizer", "tokenizer.json"), ("vlm-base", "model.safetensors"),
                   ("vlm-base", "processor_config.json"), ("clip-base", "open_clip_config.json")):
        assert (models / sub / f).is_file(), (sub, f)
    from ipl.models.clip import load_clip
    from ipl.models.vlm import load_vlm

    assert re.search(r"copy pretraining 30 steps: recall of fresh facts 0\.\d\d -> [01]\.\d\d", out.stdout)
    build = json.loads((models / "_build.json").read_text())["vlm"]["pretrain"]
    assert build["steps"] == 30 and build["loss_last"] < build["loss_first"]
    vlm = load_vlm(models / "vlm-base")
    assert vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>") == vlm.model.config.image_token_id
    load_clip(models / "clip-base")
    # a second run reuses everything
    out2 = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert out2.returncode == 0 and "reusing" in out2.stderr
