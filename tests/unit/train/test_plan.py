"""The training plan made before any worker starts, and its errors."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipl.config import ConfigError, validate
from ipl.train.config import TrainConfig
from ipl.train.stage import check_previous, input_fingerprints, make_plan


def write_split(root, split, tasks):
    d = root / "instructions" / f"split={split}"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"id": [f"{i}" for i in range(len(tasks))], "task": tasks,
                             "messages": ["[]"] * len(tasks), "photos": [[]] * len(tasks)}), d / "part-0.parquet")


@pytest.fixture
def run_dir(tmp_path, tiny_vlm):
    run = tmp_path / "r"
    write_split(run, "train", ["desc_reference"] * 90 + ["category"] * 10)
    write_split(run, "validation", ["desc_reference"] * 10 + ["category"] * 4)
    return run, tiny_vlm.path


def cfg_for(run, model, **extra):
    data = {"run": {"root": str(run.parent), "name": run.name}, "model": {"path": str(model)},
            "optim": {"micro_batch_size": 4, "grad_accum": 2, "epochs": 2}}
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v}
    return validate(TrainConfig, data)


def test_plan_counts_rows_of_the_chosen_tasks(run_dir):
    run, model = run_dir
    plan = make_plan(cfg_for(run, model))
    assert plan["train_rows"] == 100 and plan["rows_per_worker"] == 50
    assert plan["steps_per_epoch"] == 50 // 8 and plan["total_steps"] == 2 * 6
    assert plan["global_batch"] == 16
    only = make_plan(cfg_for(run, model, data={"tasks": ["category"]}, optim={"micro_batch_size": 1, "grad_accum": 1}))
    assert only["train_rows"] == 10 and only["steps_per_epoch"] == 5
    assert make_plan(cfg_for(run, model, optim={"max_steps": 7}))["total_steps"] == 7


def test_missing_inputs_name_the_command_that_makes_them(run_dir, tmp_path):
    run, model = run_dir
    with pytest.raises(FileNotFoundError, match="ipl prepare"):
        make_plan(cfg_for(tmp_path / "empty", model))
    with pytest.raises(FileNotFoundError, match="ipl synth"):
        make_plan(cfg_for(run, tmp_path / "no-model"))


def test_too_few_rows_for_the_batch_is_a_config_error(run_dir):
    run, model = run_dir
    with pytest.raises(ConfigError, match="too few"):
        make_plan(cfg_for(run, model, optim={"micro_batch_size": 64}))


def test_a_changed_config_is_refused_unless_overwrite(run_dir):
    run, model = run_dir
    cfg = cfg_for(run, model)
    (run / "train").mkdir()
    (run / "train" / "_config.json").write_text(json.dumps({"key": cfg.key(), "inputs": input_fingerprints(cfg)}))
    assert check_previous(cfg) is None  # same config, unfinished: resume
    changed = cfg_for(run, model, optim={"lr": 0.5})
    with pytest.raises(ConfigError, match="the config"):
        check_previous(changed)
    assert check_previous(changed.model_copy(update={"overwrite": True})) is None
    assert not (run / "train").exists()


def test_a_changed_base_model_or_data_is_refused(run_dir, tmp_path):
    """Same config, but the checkpoint it trains from or the instructions changed since."""
    import os
    import shutil

    run, shared = run_dir
    model = shutil.copytree(shared, tmp_path / "base")
    (run / "instructions" / "manifest.json").write_text('{"rows": 114}')
    cfg = cfg_for(run, model)
    (run / "train").mkdir()
    (run / "train" / "_config.json").write_text(json.dumps({"key": cfg.key(), "inputs": input_fingerprints(cfg)}))
    assert check_previous(cfg) is None
    weights = next(model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a rebuilt base
    with pytest.raises(ConfigError, match=r"the model \(base model .*base\) changed"):
        check_previous(cfg)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns - 10**9))
    assert check_previous(cfg) is None
    (run / "instructions" / "manifest.json").write_text('{"rows": 115}')  # re-prepared data
    with pytest.raises(ConfigError, match="the instructions .* changed"):
        check_previous(cfg)
    # a record written before the inputs were recorded cannot vouch for them
    (run / "train" / "_config.json").write_text(json.dumps({"key": cfg.key()}))
    with pytest.raises(ConfigError, match="the model .* and the instructions"):
        check_previous(cfg)


def test_data_fraction_keeps_a_nested_share_of_the_training_rows(tmp_path, tiny_vlm):
    """data.fraction counts the training rows whose draw is below it (the validation split stays whole);
    instructions without `draw` are refused naming the fix. (tests/integration/test_train_data.py streams them.)"""
    run = tmp_path / "r"
    from rows import write_drawn  # tests/helpers is on sys.path

    write_drawn(run)
    plans = {f: make_plan(cfg_for(run, tiny_vlm.path, data={"fraction": f})) for f in (0.1, 0.5, 1.0)}
    assert plans[1.0]["train_rows"] == 400
    assert 20 <= plans[0.1]["train_rows"] <= 60 and 160 <= plans[0.5]["train_rows"] <= 240
    assert all(p["validation_rows"] == 20 for p in plans.values())
    old = tmp_path / "old"
    write_split(old, "train", ["desc_reference"] * 50)
    write_split(old, "validation", ["desc_reference"] * 5)
    with pytest.raises(ConfigError, match="re-run `ipl prepare`"):
        make_plan(cfg_for(old, tiny_vlm.path, data={"fraction": 0.5}))
    assert make_plan(cfg_for(old, tiny_vlm.path))["train_rows"] == 50  # the whole data needs no draw column
