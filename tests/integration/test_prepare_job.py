"""`ipl prepare` on local Ray over a small synthetic marketplace: every injected dirty reason is
caught at its rate, clean rows are kept, nothing is unaccounted, outputs are usable, re-runs reuse."""
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ipl.config import ConfigError, load_config
from ipl.data.config import PrepareConfig
from ipl.data.pipeline import run_prepare
from ipl.synth import stage as synth_stage
from ipl.synth.config import SynthConfig

# slow: ~11 min on 2 cores (synth + CLIP pretraining + 3 prepare runs); `make test-slow` runs it.
pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
RATE = 0.04


@pytest.fixture(scope="module")
def marketplace(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    reasons = ["low_quality", "risk_traffic", "risk_low_price", "risk_fraud", "privacy_phone", "privacy_wechat",
               "privacy_email", "privacy_url", "too_short", "too_long", "special_chars", "image_text_mismatch",
               "near_duplicate"]
    cfg = load_config(SynthConfig, None, [
        f"run.root={root}", "run.name=m", "rows=1500", "shard_rows=500", "photos_max=1", "image_size=64",
        *[f"dirty.{r}={RATE}" for r in reasons],
        "models.vocab_size=600", "models.vlm.hidden_size=64", "models.vlm.intermediate_size=128",
        "models.vlm.num_hidden_layers=1", "models.clip_pretrain_steps=200", "models.clip_pretrain_rows=1500",
        "models.vlm_pretrain_steps=0"])
        # the default CLIP shape: prepare_local.yaml's consistency threshold is read off its scores
    synth_stage.run(cfg)
    return root


def prep_cfg(root, *extra):
    return load_config(PrepareConfig, REPO / "jobs/configs/prepare_local.yaml",
                       [f"run.root={root}", "run.name=m", *extra])


def test_prepare_end_to_end(marketplace):
    cfg = prep_cfg(marketplace)
    out = run_prepare(cfg)
    s = out["clean"]
    assert s["accounted"] == s["rows_in"] == 1500
    run = marketplace / "m"
    raw = pq.read_table(run / "raw", columns=["listing_id", "dirty_reason", "category"]).to_pylist()
    truth = {r["listing_id"]: r["dirty_reason"] for r in raw}
    kept = set(pq.read_table(run / "clean" / "listings", columns=["listing_id"]).column("listing_id").to_pylist())
    injected = Counter(truth.values())
    caught = Counter(truth[i] for i in truth if i not in kept)
    for reason, n in injected.items():
        if reason is None:
            continue
        # every injected reason is caught at (almost) the rate it was injected
        assert caught[reason] >= 0.85 * n, (reason, caught[reason], n, s)
    # clean rows survive the text filters, dedup and sampling...
    clean = [i for i, r in truth.items() if r is None]
    dropped_reason = {r["listing_id"]: r["drop_reason"]
                      for r in pq.read_table(run / "clean" / "dropped", columns=["listing_id", "drop_reason"]).to_pylist()}
    text_dropped = [i for i in clean if dropped_reason.get(i) not in (None, "image_text_mismatch")]
    assert len(text_dropped) <= 0.05 * len(clean), (len(text_dropped), len(clean))
    # ...and the image-text check, whose errors depend on the CLIP: the small one this test can
    # afford to pretrain is weaker than the demo's (where <0.5% of clean rows score under the threshold)
    image_dropped = [i for i in clean if dropped_reason.get(i) == "image_text_mismatch"]
    assert len(image_dropped) <= 0.15 * len(clean), (len(image_dropped), len(clean))
    assert sum(1 for i in clean if i in kept) == len(clean) - len(text_dropped) - len(image_dropped)

    # outputs: templates, instructions, LLaMA-Factory export, dropped rows with reasons
    templates = yaml.safe_load((run / "templates.yaml").read_text())["categories"]
    assert templates["phone"]["template"][:2] == ["Brand", "Model"]
    dropped = pq.read_table(run / "clean" / "dropped").to_pylist()
    assert all(d["drop_reason"] for d in dropped)
    ins = out["instructions"]
    assert ins["split"]["train"] > 0 and ins["split"]["validation"] > 0
    train_groups = set(pq.read_table(run / "instructions" / "split=train", columns=["group"]).column("group").to_pylist())
    val_groups = set(pq.read_table(run / "instructions" / "split=validation", columns=["group"]).column("group").to_pylist())
    assert not train_groups & val_groups
    lf = run / "instructions" / "llamafactory"
    info = json.loads((lf / "dataset_info.json").read_text())
    assert info["ipl_train"]["formatting"] == "sharegpt"
    line = json.loads(next((lf / "train").glob("*.jsonl")).read_text().splitlines()[0])
    assert line["messages"][-1]["role"] == "assistant"
    for img in line["images"]:
        assert (lf / img).is_file()
    assert line["messages"][1]["content"].count("<image>") == len(line["images"])
    assert s["image_text_check"]["ran"] and s["image_text_check"]["scores"]["count"] > 0
    # the listing quality score of every kept listing (Appendix C.2)
    q = out["quality"]
    scores = pq.read_table(run / "quality" / "scores")
    assert q["scored"] == scores.num_rows == len(kept) and set(scores.column("listing_id").to_pylist()) == kept
    assert 0 < q["p10"] <= q["p50"] <= q["p90"] <= 1 and q["features"]["photo_count"]["present"] == len(kept)
    assert q["features"]["category_consistent"]["mean"] == 1.0  # kept rows passed the image-text check

    # a second run reuses every part
    again = run_prepare(cfg)
    assert again["clean"] == s and again["quality"] == q


def test_missing_input_and_columns(marketplace, tmp_path):
    with pytest.raises(FileNotFoundError, match="ipl synth"):
        run_prepare(prep_cfg(marketplace, "run.name=absent"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "category": "phone", "text": "hello"}) + "\n")
    with pytest.raises(ConfigError, match=r"lack the required column\(s\) \['listing_id', 'description'\]"):
        run_prepare(prep_cfg(marketplace, f"input.path={bad}", "input.format=jsonl"))


def test_jsonl_input_with_column_mapping_and_bad_rows(marketplace, tmp_path):
    rows = [{"id": f"X{i}", "cat": "phone", "body": f"Selling my Huawei P30, 128GB, Blue, works perfectly, item {i}.",
             "quality_score": "0.9"} for i in range(30)]
    rows[3]["quality_score"] = "excellent"   # not a number: this row is quarantined, the job goes on
    rows[4]["body"] = "call me 13812345678"
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = prep_cfg(marketplace, "run.name=jsonl", f"run.root={tmp_path}", f"input.path={path}", "input.format=jsonl",
                   "input.columns={listing_id: id, category: cat, description: body}", "templates.min_listings=5")
    out = run_prepare(cfg)
    s = out["clean"]
    assert s["rows_in"] == 30 and s["accounted"] == 30
    assert s["quarantined"] == 1 and s["dropped"].get("privacy") == 1
    q = pq.read_table(tmp_path / "jsonl" / "clean" / "quarantine").to_pylist()
    assert q[0]["listing_id"] == "X3" and "error" in q[0] and q[0]["error"]
    assert "instructions" not in out  # no photos: no instruction data
