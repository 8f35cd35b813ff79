"""The demo's stage sections stay in line with the stages' own local configs."""
from ipl.config import load_config
from ipl.demo import DemoConfig
from ipl.index.config import IndexConfig
from ipl.train.config import TrainConfig


def test_demo_prepares_like_prepare_local():
    from ipl.data.config import PrepareConfig

    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("prepare")
    local = load_config(PrepareConfig, "jobs/configs/prepare_local.yaml")
    assert demo.model_dump(exclude={"run", "ray"}) == local.model_dump(exclude={"run", "ray"})


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
    skip = {"run", "ray", "http", "logs"}  # where it listens and what it prints; the served graph is the same
    assert demo.model_dump(exclude=skip) == local.model_dump(exclude=skip)


def test_demo_evaluates_like_eval_local():
    from ipl.eval.config import EvalConfig

    demo = load_config(DemoConfig, "jobs/configs/demo_local.yaml").stage("eval")
    local = load_config(EvalConfig, "jobs/configs/eval_local.yaml")
    skip = {"run", "ray"}
    assert demo.model_dump(exclude=skip) == local.model_dump(exclude=skip)


def test_the_closing_summary_shows_the_key_numbers_and_where_things_are(tmp_path):
    import json

    from ipl.config import load_config
    from ipl.demo import DemoConfig, closing_summary

    cfg = load_config(DemoConfig, "jobs/configs/demo_local.yaml", [f"run.root={tmp_path}", "run.name=d"])
    assert "no evaluation at" in closing_summary(cfg, 60)
    row = {"descriptions": 96, "contradicted_values": 0, "precision": 1.0, "hallucination": 0.0, "acc": 0.5}
    metrics = {"ablation": {"table": {"all": {"image+category+reference": row, "confirmed": {"acc": 1.0},
                                              "image+category+reference:unguarded": {"acc": 0.64,
                                                                                     "contradicted_values": 57}}}},
               "retrieval": {"indexed_sku": {"identical_top1": 0.94, "similar_top1": 1.0},
                             "unseen_sku": {"similar_top1": 0.83}},
               "domain": {"average": {"base": 0.01, "finetuned": 0.45},
                          "tasks": {"category": {"base": 0, "finetuned": 1}, "mercari_brand": {"skipped": "x"}}},
               "realdata": {"ood": {"no_product_fact": 1.0}}}
    (tmp_path / "d" / "eval").mkdir(parents=True)
    (tmp_path / "d" / "eval" / "metrics.json").write_text(json.dumps(metrics))
    text = closing_summary(cfg, 900)
    assert "done in 15.0 min" in text and "wrong key values 0" in text and "ACC 0.64 with 57 wrong values" in text
    assert "0.01 -> 0.45 over 1 tasks" in text and "identical-product top-1 0.94" in text
    assert str(tmp_path / "d" / "eval" / "report.md") in text and "http://127.0.0.1:8000/" in text
    assert len(text.splitlines()) <= 24  # one screen
