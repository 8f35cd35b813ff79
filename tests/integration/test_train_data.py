"""The training datasets on local Ray: data.fraction streams exactly the rows the plan counted, nested."""
import pytest

from rows import write_drawn  # tests/helpers is on sys.path

pytestmark = pytest.mark.integration


def cfg_for(run, model, **extra):
    from ipl.config import validate
    from ipl.train.config import TrainConfig

    data = {"run": {"root": str(run.parent), "name": run.name}, "model": {"path": str(model)}, **extra}
    return validate(TrainConfig, data)


def test_fraction_streams_the_counted_nested_rows(ray_local, tmp_path, tiny_vlm):
    from ipl.train.stage import datasets, make_plan

    run = tmp_path / "r"
    write_drawn(run)
    kept = {}
    for f in (0.1, 0.5):
        cfg = cfg_for(run, tiny_vlm.path, data={"fraction": f})
        kept[f] = {r["id"] for r in datasets(cfg)["train"].take_all()}
        assert len(kept[f]) == make_plan(cfg)["train_rows"]
    assert kept[0.1] < kept[0.5]
    assert len(datasets(cfg_for(run, tiny_vlm.path))["validation"].take_all()) == 20
