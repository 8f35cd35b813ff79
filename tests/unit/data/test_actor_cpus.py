"""The prepare pass's actor pools must leave Ray Data's tasks a CPU, or the pass never ends."""
import pytest

from ipl.config import ConfigError, load_config
from ipl.data.config import PrepareConfig
from ipl.data.pipeline import check_actor_cpus


def test_pools_that_leave_no_cpu_for_the_tasks_are_refused_up_front():
    cfg = load_config(PrepareConfig, "jobs/configs/prepare_local.yaml", ["consistency.num_cpus=0.5"])
    with pytest.raises(ConfigError, match=r"hold 1\.5 of the cluster's 2 CPUs.*consistency\.concurrency 2 x "
                                          r"consistency\.num_cpus 0\.5 \+ llm\.concurrency 1 x llm\.num_cpus 0\.5"):
        check_actor_cpus(cfg, 2.0)
    check_actor_cpus(cfg, 4.0)  # a bigger cluster has room
    check_actor_cpus(cfg, 0.0)  # an autoscaling head with no CPUs yet: not judged
    off = cfg.model_copy(update={"consistency": cfg.consistency.model_copy(update={"enabled": False})})
    check_actor_cpus(off, 2.0)  # no check actors: only the extractor's 0.5


@pytest.mark.parametrize("path", ["jobs/configs/prepare_local.yaml", "jobs/configs/prepare_mercari.yaml"])
def test_the_shipped_local_configs_fit_two_cpus(path):
    check_actor_cpus(load_config(PrepareConfig, path), 2.0)
