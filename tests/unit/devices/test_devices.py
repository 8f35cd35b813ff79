"""The device and precision policy (ipl.devices) and the memory arithmetic the capacity checks use."""
import math

import pytest
import torch

from ipl.config import ConfigError
from ipl.devices import (PrecisionError, accelerator_memory_gib, cuda_usable, needs_probe, placement_device,
                         probe_vlm, require_finite, resolve_dtype, serving_memory_gib, training_memory_gib)


def test_a_reservation_of_no_gpus_stays_on_the_cpu_and_cpu_is_always_cpu():
    assert placement_device("cpu") == "cpu"
    assert placement_device("auto", num_gpus=0) == "cpu"
    assert placement_device("auto") == ("cuda" if cuda_usable() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_is_refused_not_silently_cpu():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        placement_device("cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        placement_device("cuda:1")
    assert placement_device("auto", num_gpus=1) == "cpu"  # a GPU reservation that Ray could not back


def test_bad_device_and_dtype_names_are_refused():
    with pytest.raises(ConfigError, match="expected auto, cpu or cuda"):
        placement_device("tpu")
    with pytest.raises(ConfigError, match="expected auto"):
        resolve_dtype("int8", "cpu")


def test_precision_policy_on_the_cpu():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert not needs_probe("float16", "cpu") and needs_probe("float16", "cuda") and not needs_probe("bfloat16", "cuda")


def test_non_finite_logits_are_a_precision_error_naming_the_alternative():
    require_finite(torch.zeros(2, 3), "m", "float16")
    with pytest.raises(PrecisionError, match="bfloat16"):
        require_finite(torch.tensor([0.0, float("inf"), float("nan")]), "m", "float16")


def test_the_probe_passes_a_sound_model_and_catches_an_overflowing_one(tiny_vlm):
    import copy

    probe_vlm(tiny_vlm, "float32")
    broken = copy.deepcopy(tiny_vlm)
    with torch.no_grad():  # what an fp16 overflow does to a layer: its activations become inf
        next(broken.model.parameters()).fill_(float("inf"))
    with pytest.raises(PrecisionError, match="not finite"):
        probe_vlm(broken, "float16")


def test_accelerator_labels_give_memory_per_gpu():
    assert accelerator_memory_gib("V100") == 16
    assert accelerator_memory_gib("V100-32G") == 32
    assert accelerator_memory_gib("A10G") == 24
    assert accelerator_memory_gib("A800-80G") == 80
    assert accelerator_memory_gib("A100") == 40
    assert accelerator_memory_gib("MI300") is None


def test_serving_memory_of_the_7b():
    m = serving_memory_gib(8.29, "bfloat16", 1, kv_reserve_gib=2.0, overhead_gib=1.0)
    assert math.isclose(m["weights_gib"], 8.29e9 * 2 / 2 ** 30) and math.isclose(m["total_gib"], m["weights_gib"] + 3)
    assert m["total_gib"] > 0.9 * 16 and m["total_gib"] < 0.9 * 24  # a V100 16 GB cannot, an A10G can
    assert math.isclose(serving_memory_gib(8.29, "float16", 2)["weights_gib"], m["weights_gib"] / 2)
    assert math.isclose(serving_memory_gib(8.29, "float32", 1)["weights_gib"], 2 * m["weights_gib"])


def test_zero_stages_shard_what_the_zero_paper_says():
    n, w = 8.29, 24
    s0, s1, s2, s3 = (training_memory_gib(n, s, w, "bf16", activation_gib=0) for s in (0, 1, 2, 3))
    gib = 1e9 * n / 2 ** 30
    assert math.isclose(s0["total_gib"], 16 * gib)  # 2 + 2 + 12 bytes per parameter
    assert math.isclose(s1["optimizer_gib"], 12 * gib / w) and math.isclose(s1["grads_gib"], 2 * gib)
    assert math.isclose(s2["grads_gib"], 2 * gib / w) and math.isclose(s2["weights_gib"], 2 * gib)
    assert math.isclose(s3["weights_gib"], 2 * gib / w)
    assert s0["total_gib"] > s1["total_gib"] > s2["total_gib"] > s3["total_gib"]
