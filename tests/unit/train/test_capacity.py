"""Placement check before the trainer starts: 24 GPU workers on 3 x 8, refused when too small."""
import pytest

from ipl.config import ConfigError
from ipl.train.capacity import check_capacity
from ipl.train.config import ScalingConfig


def node(i, cpu, gpu=0, kind=None, alive=True):
    res = {"CPU": cpu, **({"GPU": gpu} if gpu else {}), **({f"accelerator_type:{kind}": 1} if kind else {})}
    return {"NodeID": f"node{i:04d}xxxx", "Alive": alive, "Resources": res}


def gpu_cluster(n_nodes, kind="A100"):
    return [node(0, 8)] + [node(i + 1, 96, 8, kind) for i in range(n_nodes)]


def test_24_gpu_workers_fit_three_nodes_of_eight():
    scaling = ScalingConfig(num_workers=24, use_gpu=True, cpus_per_worker=8, accelerator_type="A100")
    assert check_capacity(scaling, gpu_cluster(3)) == [8, 8, 8]  # the CPU head node has no A100
    assert check_capacity(scaling.model_copy(update={"accelerator_type": None}), gpu_cluster(3)) == [0, 8, 8, 8]


def test_too_small_a_cluster_is_refused_with_what_is_missing():
    scaling = ScalingConfig(num_workers=24, use_gpu=True, cpus_per_worker=8)
    with pytest.raises(ConfigError, match=r"room for 16.*16 GPU"):
        check_capacity(scaling, gpu_cluster(2))
    dead = gpu_cluster(3)
    dead[3]["Alive"] = False
    with pytest.raises(ConfigError, match="room for 16"):
        check_capacity(scaling, dead)


def test_accelerator_type_filters_nodes():
    scaling = ScalingConfig(num_workers=16, use_gpu=True, cpus_per_worker=8, accelerator_type="A100")
    mixed = [node(0, 8), node(1, 96, 8, "A100"), node(2, 96, 8, "V100"), node(3, 96, 8, "V100")]
    with pytest.raises(ConfigError, match="of type A100"):
        check_capacity(scaling, mixed)


def test_strict_strategies():
    pack = ScalingConfig(num_workers=12, use_gpu=True, cpus_per_worker=4, placement_strategy="STRICT_PACK")
    with pytest.raises(ConfigError, match="one node"):
        check_capacity(pack, gpu_cluster(3))
    spread = ScalingConfig(num_workers=3, use_gpu=True, cpus_per_worker=4, placement_strategy="STRICT_SPREAD")
    assert check_capacity(spread, gpu_cluster(3)) == [1, 1, 1]
    with pytest.raises(ConfigError, match="distinct nodes"):
        check_capacity(spread.model_copy(update={"num_workers": 4}), gpu_cluster(3))


def test_workers_must_leave_cpu_for_ray_data():
    with pytest.raises(ConfigError, match="Ray Data"):
        check_capacity(ScalingConfig(num_workers=2, cpus_per_worker=1), [node(0, 2)], data_cpus=0.25)
    assert check_capacity(ScalingConfig(num_workers=2, cpus_per_worker=0.5), [node(0, 2)], data_cpus=0.25) == [2]
