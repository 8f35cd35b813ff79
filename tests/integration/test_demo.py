"""`ipl demo` end to end as a newcomer runs it (small marketplace)."""
import os
import re
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_every_stage_and_ends_with_the_evaluation(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "ipl.cli", "demo", f"run.root={tmp_path}", "synth.rows=300", "synth.shard_rows=150",
           "synth.models.vlm.hidden_size=64", "synth.models.vlm.intermediate_size=128",
           "synth.models.clip_pretrain_steps=30", "synth.models.clip_pretrain_rows=300",
           "synth.models.vlm_pretrain_steps=20", "synth.models.vlm_pretrain_batch_size=4", "prepare.templates.min_listings=5",
           "train.optim.max_steps=4", "train.eval.recall_rows=4", "train.eval.max_new_tokens=16",
           "index.encoder.steps=5", "index.encoder.batch_size=16", "index.eval.holdout_fraction=0.2",
           f"serve.http.port={free_port()}", "serve.generate.max_new_tokens=16",
           "eval.sets.indexed_sku=4", "eval.sets.unseen_sku=4", "eval.generation.max_new_tokens=16",
           "eval.generation.num_cpus=1", "eval.realdata.enabled=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "raw listings: 300 rows" in out.stdout
    assert "tiny VLM:" in out.stdout and "copy pretraining 20 steps" in out.stdout
    assert "clean: 300 rows in" in out.stdout and "instructions:" in out.stdout
    assert "trained 4 steps" in out.stdout
    assert re.search(r"attribute recall of generations on [1-4] held-out rows", out.stdout)
    assert re.search(r"index v0001: \d+ vectors, dim \d+, IVF-Flat .* in 2 shards", out.stdout)
    assert re.search(r"held-out photos \(\d+\): identical \(SKU\) top-1 [01]\.\d\d", out.stdout)
    assert "evidence calibration on" in out.stdout  # every tier's threshold, or DISABLED with its reason
    # serve: a streamed draft for a held-out photo, printed as it arrives
    assert "POST http://127.0.0.1:" in out.stdout and re.search(r"category: \w+ \(predictor:head", out.stdout)
    assert "[done]" in out.stdout and "timings (ms)" in out.stdout
    assert "verification:" in out.stdout  # the draft was checked against the evidence
    # eval: the demo ends with the ablation table and where the report is
    tail = out.stdout[out.stdout.index("== eval:"):]
    assert "RAG ablation" in tail and "| image+category+reference |" in tail
    assert f"report: {tmp_path}/demo/eval/report.md" in tail and (tmp_path / "demo" / "eval" / "report.md").is_file()
    assert "Not built yet" not in out.stdout
