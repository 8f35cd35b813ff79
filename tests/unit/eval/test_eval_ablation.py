"""Scoring the ablation rows, the prompts of each row, the generation cache, the report."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipl.config import ConfigError, load_config
from ipl.eval.ablation import condition_prompt, generation_key, read_generations, retrieval_summary, score
from ipl.eval.config import CONDITIONS, EvalConfig
from ipl.eval.report import ablation_table, plot_ablation, render

TRUTH = {"Brand": "Huawei", "Model": "P30", "Storage": "128GB", "Color": "Blue", "Condition": "like new"}


def test_condition_prompts_differ_only_in_what_they_are_given():
    ref = {"Brand": "Huawei", "Model": "P30"}
    p = {c: condition_prompt(c, "phone", ["Brand", "Model"], ref, "en") for c in CONDITIONS}
    assert "phone" not in p["image"] and "<reference>" not in p["image"]
    assert "The item is a phone" in p["image+category"] and "<reference>" not in p["image+category"]
    assert "phone" not in p["image+reference"] and '"Model": "P30"' in p["image+reference"]
    assert "The item is a phone" in p["image+category+reference"] and "<reference>" in p["image+category+reference"]
    assert p["image"] == condition_prompt("image+category", None, [], None, "en")  # no category: image only


def record(set_name, lid, cond_texts, reference=True):
    return {"set": set_name, "listing_id": lid, "sku_id": "phone/huawei/p30/blue/128gb", "spu_id": "phone/huawei/p30",
            "category": "phone", "language": "en", "description": "My Huawei P30, blue, 128GB. Like new.",
            "attributes": TRUTH, "reference": {"Brand": "Huawei"} if reference else None, "references": ["L1"],
            "category_used": "phone", "fallbacks": [] if reference else ["no_retrieval_hit"],
            "keys": {c: f"{lid}:{c}" for c in cond_texts},
            "retrieval": {"hits": 3, "identical_top1": lid == "a", "similar_top1": True, "category_top1": True}}


@pytest.fixture
def run_cfg(tmp_path):
    listings = tmp_path / "r" / "clean" / "listings"
    listings.mkdir(parents=True)
    other = {**TRUTH, "Model": "Mate 10 Pro", "Color": "Red"}
    pq.write_table(pa.table({"category": ["phone", "phone"], "attributes": [json.dumps(TRUTH), json.dumps(other)]}),
                   listings / "part-0.parquet")
    return EvalConfig(run={"root": str(tmp_path), "name": "r"})


def test_score_rows(run_cfg):
    texts = {"image": "selling my phone", "image+category": "selling my Huawei Mate 10 Pro",
             "image+reference": "selling my Huawei P30, blue", "image+category+reference":
             "selling my Huawei P30, 128 GB, blue!!"}
    records = [record("indexed_sku", "a", texts), record("unseen_sku", "b", texts)]
    gens = {f"{r['listing_id']}:{c}": t for r in records for c, t in texts.items()}
    out = score(run_cfg, records, gens, sim=None)
    table = out["table"]
    assert set(table) == {"indexed_sku", "unseen_sku", "all"}
    rows = table["all"]
    # the key attributes are the product-level ones (Condition is a listing's own, not the SKU's)
    assert rows["image"]["acc"] == 0 and rows["image"]["values"] == 8
    assert rows["image+category"]["acc"] == pytest.approx(1 / 4)          # Huawei
    assert rows["image+category"]["hallucination"] == 1.0                 # Mate 10 Pro is another model
    assert rows["image+reference"]["acc"] == pytest.approx(3 / 4)
    assert rows["image+category+reference"]["acc"] == 1.0
    assert rows["image+category+reference"]["style"]["marketing"] == 1.0   # "!!"
    assert rows["image"]["style"]["casual"] == 1.0
    assert 0 < rows["image+category+reference"]["bleu1"] <= 1 and "sim" not in rows["image"]
    ex = {e["listing_id"]: e for e in out["examples"]}
    assert ex["a"]["generated"]["image+category"]["contradicted"] == ["Model=Mate 10 Pro"]
    assert ex["a"]["truth"] == {k: TRUTH[k] for k in ("Brand", "Model", "Storage", "Color")}


def test_retrieval_summary_leaves_identical_out_for_unseen_skus():
    texts = {"image": ""}
    recs = [record("indexed_sku", "a", texts), record("indexed_sku", "x", texts, reference=False),
            record("unseen_sku", "b", texts), {"set": "unseen_sku", "listing_id": "c", "refused": "prohibited_content"}]
    out = retrieval_summary(recs)
    assert out["indexed_sku"]["identical_top1"] == 0.5 and out["indexed_sku"]["with_reference"] == 0.5
    assert out["indexed_sku"]["fallbacks"] == {"no_retrieval_hit": 1}
    assert "identical_top1" not in out["unseen_sku"] and out["unseen_sku"]["refused"] == 1


def test_generation_cache_key_and_torn_file(tmp_path):
    k = generation_key("m1", "96", "en", "prompt", [b"photo"])
    assert k != generation_key("m2", "96", "en", "prompt", [b"photo"])
    assert k != generation_key("m1", "96", "en", "prompt", [b"other photo"])
    assert k != generation_key("m1", "96", "zh", "prompt", [b"photo"])
    f = tmp_path / "generations.jsonl"
    f.write_text(json.dumps({"key": k, "text": "hello"}) + '\n{"key": "torn", "te')
    assert read_generations(f) == {k: "hello"}


def test_report_renders_tables_and_plots(tmp_path):
    row = {"acc": 0.5, "hallucination": 0.1, "sim": 0.7, "bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1,
           "rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45, "descriptions": 10, "style": {"casual": 0.9}}
    table = {"indexed_sku": {c: dict(row, acc=0.2 + 0.1 * i) for i, c in enumerate(CONDITIONS)}}
    md = ablation_table(table["indexed_sku"])
    assert md.splitlines()[0].startswith("| condition | n | ACC | Halluc. | SIM | BLEU1")
    assert "| image+category+reference | 10 | 0.500 | 0.100 | 0.700 |" in md
    plots = plot_ablation(table, tmp_path)
    assert all((tmp_path / p).read_bytes().startswith(b"\x89PNG") for p in plots) and len(plots) == 4
    result = {"run": "runs/x", "command": "ipl eval", "model": {"vlm": "v", "fingerprint": "f"},
              "ablation": {"table": table, "skipped": {"unseen_sku": "no validation split"}},
              "retrieval": {"indexed_sku": {"queries": 10, "identical_top1": 0.8, "similar_top1": 0.9,
                                            "category_top1": 1.0, "with_reference": 1.0, "fallbacks": {}}},
              "realdata": {"skipped": "no fixtures"}}
    text = render(result, plots)
    assert "## RAG ablation" in text and "0.200 -> image+category+reference 0.500 (2.50x)" in text
    assert "set `unseen_sku` skipped: no validation split" in text and "![ablation_acc.png]" in text
    assert "| unseen photos of indexed SKUs | 10 | 0.800 | 0.900 | 1.000 |" in text


def test_configs_validate(tmp_path):
    for f in ("jobs/configs/eval_local.yaml", "jobs/configs/eval_cluster.yaml"):
        load_config(EvalConfig, f)
    with pytest.raises(ConfigError, match="conditions"):
        load_config(EvalConfig, None, ["conditions=[image,image]"])
    with pytest.raises(ConfigError, match="conditions"):
        load_config(EvalConfig, None, ["conditions=[image,text_only]"])
    with pytest.raises(ConfigError, match="sets.indexed_sku"):
        load_config(EvalConfig, None, ["sets.indexed_sku=-1"])
