"""`ipl curve` end to end on the shared fixture run: two shares of the instruction data, each trained by the
real Ray Train stage and evaluated by the real eval stage (domain benchmark + Table 7 main row); a re-run
reuses both shares."""
import json

import pytest

from ipl.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two trainings and two evaluations: minutes


def test_the_curve_trains_each_share_and_reports_it(served_run, capsys):
    from ipl.curve import CurveConfig, main

    root, _ = served_run
    cfg = load_config(CurveConfig, "jobs/configs/curve_local.yaml", [
        f"run.root={root}", "run.name=s", "fractions=[0.5,1.0]"]).model_copy(update={
        "train_overrides": [
            f"model.path={root}/t/models/vlm-base", f"data.instructions={root}/t/instructions", "optim.max_steps=2",
            "optim.micro_batch_size=2", "eval.recall_rows=0", "eval.validation_every=2", "data.validation_rows=8",
            "checkpoint.every_steps=2"],
        "eval_overrides": [
            f"sets.listings={root}/t/clean/listings", f"sets.instructions={root}/t/instructions",
            f"serve.models.templates={root}/t/templates.yaml", "sets.indexed_sku=3", "sets.unseen_sku=3",
            "generation.max_new_tokens=8", "generation.num_cpus=1", "serve.retrieval.category_min_score=0.2",
            f"domain.base_vlm={root}/t/models/vlm-base", "domain.rows_per_task=2", "domain.max_new_tokens=8"]})
    assert main(cfg) == 0
    curve = json.loads((cfg.dir / "curve.json").read_text())
    shares = curve["shares"]
    assert [s["fraction"] for s in shares] == [0.5, 1.0]
    assert 0 < shares[0]["train_rows"] < shares[1]["train_rows"]  # half the rows, the same validation split
    for s in shares:
        assert (cfg.share_dir(s["fraction"]) / "model" / "config.json").is_file()
        assert 0 <= s["table7"]["acc"] <= 1 and s["descriptions"] == 6
        assert s["domain"] and s["domain_average"] is not None and s["domain_base_average"] is not None
    assert "| 50% |" in (cfg.dir / "curve.md").read_text() and (cfg.dir / "curve.png").is_file()
    capsys.readouterr()
    assert main(cfg) == 0  # resumable: both shares reused, nothing retrained
    assert capsys.readouterr().out.count("reused") == 2
