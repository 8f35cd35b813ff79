"""ipl curve: each share its own training directory, model and report; the table and plot of the shares."""
import pytest

from ipl.config import ConfigError, load_config
from ipl.curve import CurveConfig, curve_lines, plot, share_configs, share_key, share_result


def test_each_share_trains_and_evaluates_on_its_own(tmp_path):
    cfg = load_config(CurveConfig, "jobs/configs/curve_local.yaml", [f"run.root={tmp_path}", "run.name=x",
                                                                      "fractions=[1.0,0.1]"])
    assert cfg.fractions == [0.1, 1.0]
    t10, e10 = share_configs(cfg, 0.1)
    t100, e100 = share_configs(cfg, 1.0)
    assert t10.data.fraction == 0.1 and t100.data.fraction == 1.0
    assert t10.train_dir == tmp_path / "x" / "curve" / "frac010" / "train"
    assert t10.output_dir == tmp_path / "x" / "curve" / "frac010" / "model"
    assert e10.serve_config().vlm_dir == t10.output_dir and e10.out_dir == tmp_path / "x" / "curve" / "frac010" / "eval"
    assert e10.conditions == ["image+category+reference"] and not e10.realdata.enabled and e10.domain.enabled
    # the same held-out data for every share: instructions and listings of the curve's run
    assert t10.instructions_dir == t100.instructions_dir == tmp_path / "x" / "instructions"
    assert e10.listings_dir == e100.listings_dir
    assert share_key(t10, e10) != share_key(t100, e100) and share_key(t10, e10) == share_key(*share_configs(cfg, 0.1))
    for bad in ("fractions=[0]", "fractions=[0.5,0.5]", "fractions=[]", "row=nope"):
        with pytest.raises(ConfigError):
            load_config(CurveConfig, "jobs/configs/curve_local.yaml", [bad])


def test_the_table_and_plot_show_every_share(tmp_path):
    def share(f, acc, dom):
        result = {"ablation": {"table": {"all": {"image+category+reference": {
            "acc": acc, "precision": 1.0, "hallucination": 0.0, "abstained": 0.5, "model_acc": acc / 2, "sim": 0.5,
            "rougeL": 0.3, "descriptions": 96}}}},
            "domain": {"tasks": {"category": {"base": 0.0, "finetuned": dom}, "mercari_brand": {"skipped": "no data"}},
                       "average": {"base": 0.01, "finetuned": dom}}}
        return share_result(f, {"plan": {"train_rows": int(4000 * f), "total_steps": 10}, "final": {"val_loss": 1.0}},
                            result, "image+category+reference")

    rows = [share(0.1, 0.2, 0.1), share(1.0, 0.5, 0.4)]
    assert rows[0]["domain"] == {"category": 0.1} and rows[1]["table7"]["acc"] == 0.5
    text = "\n".join(curve_lines(rows, "image+category+reference"))
    assert "| 10% | 400 |" in text and "| 100% | 4000 |" in text and "**0.400**" in text and "0.010" in text
    assert "mercari_brand" not in text  # a skipped task is not a column of zeros
    plot(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
