"""TrainConfig: DeepSpeed section merged with the derived keys, precision per device, plan errors."""
import pytest

from ipl.config import ConfigError, validate
from ipl.train.config import TrainConfig


def test_deepspeed_config_derives_batch_accumulation_clipping_and_precision():
    cfg = validate(TrainConfig, {"optim": {"micro_batch_size": 2, "grad_accum": 4, "grad_clip": 0.5},
                                 "scaling": {"num_workers": 24, "use_gpu": True},
                                 "deepspeed": {"zero_optimization": {"stage": 1, "reduce_bucket_size": 5e8}}})
    ds = cfg.deepspeed_config(cfg.resolve_precision("ampere+"))
    assert ds["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 5e8}
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 2 * 4 * 24
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}


def test_precision_fp32_on_cpu_bf16_on_ampere_fp16_on_volta():
    cpu = TrainConfig()
    assert cpu.resolve_precision(None) == "fp32"
    gpu = validate(TrainConfig, {"scaling": {"use_gpu": True}})
    assert gpu.resolve_precision("ampere+") == "bf16"
    assert gpu.resolve_precision("volta") == "fp16"
    pinned = validate(TrainConfig, {"scaling": {"use_gpu": True, "gpu_class": "volta"}})
    assert pinned.resolve_precision("ampere+") == "fp16"


@pytest.mark.parametrize("data, key", [
    ({"deepspeed": {"train_micro_batch_size_per_gpu": 4}}, "optim.micro_batch_size"),
    ({"deepspeed": {"optimizer": {"type": "Adam"}}}, "optim"),
    ({"deepspeed": {"zero_optimization": {"stage": 7}}}, "stage must be 0-3"),
    ({"precision": "bf16"}, "use_gpu"),
    ({"data": {"tasks": ["desc_image", "poem"]}}, "poem"),
    ({"optim": {"betas": [0.9, 1.5]}}, "betas"),
])
def test_bad_configs_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        validate(TrainConfig, data)


def test_resume_key_ignores_reporting_but_not_the_recipe():
    base = TrainConfig()
    assert base.key() == validate(TrainConfig, {"eval": {"report_every": 3}, "max_failures": 5}).key()
    assert base.key() != validate(TrainConfig, {"optim": {"lr": 0.1}}).key()


def test_local_and_24gpu_configs_load():
    from ipl.config import load_config

    local = load_config(TrainConfig, "jobs/configs/train_local.yaml")
    assert local.scaling.num_workers == 2 and not local.scaling.use_gpu
    prod = load_config(TrainConfig, "jobs/configs/train_24gpu.yaml")
    assert prod.scaling.num_workers == 24 and prod.scaling.use_gpu
    assert prod.optim.epochs == 3 and tuple(prod.optim.betas) == (0.9, 0.98) and prod.optim.eps == 1e-6
    assert prod.deepspeed["zero_optimization"]["stage"] == 1
