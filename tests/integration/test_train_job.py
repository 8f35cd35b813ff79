"""`ipl train` on local Ray: 2 CPU workers running DeepSpeed ZeRO-1, a worker killed mid-run,
resume by re-running, the Hugging Face export reloading and generating."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ipl.config import load_config
from ipl.models.vlm import load_vlm, vision_parameters
from ipl.train.config import TrainConfig
from ipl.train.stage import metrics_history
from ipl.train.stage import run as run_train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prepared(prepared_marketplace):
    return prepared_marketplace


def train_cfg(root, name, *overrides):
    return load_config(TrainConfig, None, [
        f"run.root={root}", f"run.name={name}", f"data.instructions={root}/t/instructions",
        f"model.path={root}/t/models/vlm-base",
        "scaling.cpus_per_worker=0.5", "optim.max_steps=6", "optim.micro_batch_size=2", "optim.lr=1e-3", "images.max_photos=1",
        "checkpoint.every_steps=2", "eval.report_every=1", "eval.validation_every=3", "data.validation_rows=4",
        "eval.recall_rows=4", "eval.max_new_tokens=8", *overrides])


def weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def test_worker_killed_at_step_3_resumes_from_checkpoint_and_exports(prepared):
    cfg = train_cfg(prepared, "chaos", "chaos.kill_at_step=3", "chaos.rank=1", "max_failures=1")
    summary = run_train(cfg)
    train_dir = cfg.train_dir
    assert list(train_dir.glob("chaos-killed-step3")), "the worker did not die"
    resumes = [json.loads(x) for x in (train_dir / "resumes.jsonl").read_text().splitlines()]
    assert [r["from_step"] for r in resumes] == [2]  # the checkpoint before the kill
    assert summary["final"]["step"] == summary["plan"]["total_steps"] == 6
    history = metrics_history(cfg)
    for key in ("loss", "lr", "samples_per_s", "tokens_per_s"):
        assert all(key in m for m in history), key
    assert any(m.get("val_loss") is not None for m in history)
    # the export loads with transformers and generates; the vision encoder did not change
    base, tuned = weights(cfg.model_path), weights(cfg.output_dir)
    vlm = load_vlm(cfg.output_dir)
    vision = {n for n, p in vlm.model.named_parameters() if any(p is q for q in vision_parameters(vlm.model))}
    assert vision
    changed = [n for n in base if not torch.equal(base[n], tuned[n])]
    assert changed and not [n for n in changed if "visual" in n and "merger" not in n]
    assert any("merger" in n for n in changed) and any("language_model" in n or "layers" in n for n in changed)
    batch = vlm.processor(text=["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    out = vlm.model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert summary["recall"]["rows"] == 4
    # a second run of the same command reuses the finished run
    assert run_train(cfg)["reused"] is True


@pytest.mark.slow  # ~2 min; `make test` keeps the worker-kill resume test (make test-slow runs this one)
def test_rerunning_the_same_command_resumes_an_interrupted_run(prepared):
    cfg = train_cfg(prepared, "rerun", "chaos.kill_at_step=5", "chaos.rank=0", "max_failures=0")
    with pytest.raises(RuntimeError, match="training failed"):
        run_train(cfg)
    assert not cfg.output_dir.exists()
    again = run_train(train_cfg(prepared, "rerun"))  # same command, no fault this time
    resumes = [json.loads(x) for x in (cfg.train_dir / "resumes.jsonl").read_text().splitlines()]
    assert resumes[-1]["from_step"] == 4
    assert again["final"]["step"] == 6 and cfg.output_dir.is_dir()
