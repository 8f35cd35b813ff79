"""The demo's stage sections stay in line with the stages' own local configs."""
from ipl.config import load_config
from ipl.demo import DemoConfig
from ipl.index.config import IndexConfig
from ipl.train.config import TrainConfig


def test_demo_trains_like_train_local():
    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("train")
    local = load_config(TrainConfig, "jobs/configs/train_local.yaml")
    assert demo.key() == local.key()
    assert demo.eval == local.eval


def test_demo_indexes_like_index_local():
    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("index")
    local = load_config(IndexConfig, "jobs/configs/index_local.yaml")
    assert demo.model_dump(exclude={"run", "ray"}) == local.model_dump(exclude={"run", "ray"})


def test_demo_serves_like_serve_local():
    from ipl.serve.stage import load_serve_config

    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("serve")
    local = load_serve_config("serve_configs/local.yaml")
    skip = {"run", "ray", "http"}
    assert demo.model_dump(exclude=skip) == local.model_dump(exclude=skip)


def test_demo_evaluates_like_eval_local():
    from ipl.eval.config import EvalConfig

    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("eval")
    local = load_config(EvalConfig, "jobs/configs/eval_local.yaml")
    skip = {"run", "ray"}
    assert demo.model_dump(exclude=skip) == local.model_dump(exclude=skip)
