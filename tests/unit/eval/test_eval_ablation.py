"""Scoring the ablation rows, the prompts of each row, the generation cache, the report."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipl.config import ConfigError, load_config
from ipl.eval.ablation import condition_prompt, generation_key, read_generations
from ipl.eval.scoring import retrieval_summary, score
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


VOCAB = {"Brand": ["Huawei", "Apple"], "Model": ["P30", "Mate 10 Pro"], "Color": ["Blue", "Red"],
         "Storage": ["128GB", "64GB"]}


def record(set_name, lid, row_texts, reference=True):
    rows = {}
    for name in row_texts:
        guard = not name.endswith(":unguarded")
        facts = {"Brand": "Huawei"} if ("reference" in name or name == "confirmed") else {}
        if name == "confirmed":
            facts = {k: TRUTH[k] for k in ("Brand", "Model", "Storage", "Color")}
        rows[name] = {"prompt": name, "facts": facts, "guard": guard, "vocabulary": VOCAB,
                      "unknown": [k for k in ("Brand", "Model", "Storage", "Color") if k not in facts]}
    return {"set": set_name, "listing_id": lid, "sku_id": "phone/huawei/p30/blue/128gb", "spu_id": "phone/huawei/p30",
            "category": "phone", "language": "en", "description": "My Huawei P30, blue, 128GB. Like new.",
            "attributes": TRUTH, "reference": {"Brand": "Huawei"} if reference else None, "references": ["L1"],
            "unguarded_reference": None, "statuses": {},
            "category_used": "phone", "fallbacks": [] if reference else ["no_retrieval_hit"],
            "keys": {c: f"{lid}:{c}" for c in row_texts}, "rows": rows,
            "retrieval": {"hits": 3, "identical_top1": lid == "a", "similar_top1": True, "category_top1": True}}


@pytest.fixture
def run_cfg(tmp_path):
    listings = tmp_path / "r" / "clean" / "listings"
    listings.mkdir(parents=True)
    other = {**TRUTH, "Model": "Mate 10 Pro", "Color": "Red", "Condition": "for parts"}
    pq.write_table(pa.table({"category": ["phone", "phone"], "attributes": [json.dumps(TRUTH), json.dumps(other)]}),
                   listings / "part-0.parquet")
    from ipl.catalog.templates import write_templates

    write_templates(tmp_path / "r" / "templates.yaml", {"phone": {"template": ["Brand", "Model", "Storage", "Color",
                                                                              "Condition"]}}, "test")
    return EvalConfig(run={"root": str(tmp_path), "name": "r"})


def test_score_rows(run_cfg):
    texts = {"image": "selling my phone, for parts", "image+category": "selling my phone, mate 10 pro",
             "image+reference": "selling my Huawei P30, blue", "image+category+reference":
             "selling my Huawei phone, like new!!",
             "image+category:unguarded": "selling my Huawei Mate 10 Pro", "confirmed": "my Huawei P30, 128GB, blue"}
    records = [record("indexed_sku", "a", texts), record("unseen_sku", "b", texts)]
    gens = {f"{r['listing_id']}:{c}": t for r in records for c, t in texts.items()}
    out = score(run_cfg, records, gens, sim=None)
    table = out["table"]
    assert set(table) == {"indexed_sku", "unseen_sku", "all"}
    rows = table["all"]
    assert list(rows) == ["image", "image+category", "image+reference", "image+category+reference",
                          "image+category:unguarded", "confirmed"]
    # the key attributes are the product-level ones (Condition is a listing's own, not the SKU's)
    assert rows["image"]["acc"] == 0 and rows["image"]["values"] == 8 and rows["image"]["precision"] is None
    assert rows["image"]["abstained"] == 1.0  # nothing given: every true value is left to the seller
    # the guarded row's unsupported model clause is removed by the verification; unguarded it stays and is wrong
    assert rows["image+category"]["hallucination"] == 0.0 and rows["image+category"]["repaired"] == 2
    unguarded = rows["image+category:unguarded"]
    assert unguarded["hallucination"] == 1.0 and unguarded["acc"] == pytest.approx(1 / 4)
    assert unguarded["precision"] == pytest.approx(0.5) and unguarded["contradicted_values"] == 2
    # the unsupported values (P30, blue: not facts of this row) are cut out; the fact Huawei stays
    assert rows["image+reference"]["acc"] == pytest.approx(1 / 4) and rows["image+reference"]["precision"] == 1.0
    assert rows["image+reference"]["abstained"] == pytest.approx(3 / 4)
    assert rows["confirmed"]["acc"] == 1.0 and rows["confirmed"]["abstained"] == 0.0
    assert rows["image+category+reference"]["style"]["marketing"] == 1.0   # "!!"
    assert rows["image"]["style"]["casual"] == 1.0
    assert 0 < rows["confirmed"]["bleu1"] <= 1 and "sim" not in rows["image"]
    # the item's own condition (a listing-level key) is not scored above, and no row is given it as a
    # fact: a draft stating it made it up, whether it is wrong ("for parts") or lucky ("like new")
    assert rows["image"]["listing_facts"] == {"values": 2, "stated": 0, "contradicted": 2, "unsupported": 2,
                                              "drafts_share": 1.0}
    assert rows["image+category+reference"]["listing_facts"] == {"values": 2, "stated": 2, "contradicted": 0,
                                                                 "unsupported": 2, "drafts_share": 1.0}
    assert rows["confirmed"]["listing_facts"]["unsupported"] == 0
    assert all(r["partial_values"] == 0 for r in rows.values())  # "Mate 10 Pro" is written whole or not at all
    assert all(r["near_values"] == 0 for r in rows.values())
    ex = {e["listing_id"]: e for e in out["examples"]}
    assert ex["a"]["generated"]["image+category:unguarded"]["contradicted"] == ["Model=Mate 10 Pro"]
    assert ex["a"]["generated"]["image+category"]["verification"]["removed"] == ["mate 10 pro"]
    assert ex["a"]["truth"] == {k: TRUTH[k] for k in ("Brand", "Model", "Storage", "Color")}


def test_every_row_scores_the_text_with_its_repeats_taken_out(run_cfg):
    """As the Serve pipeline sends it (ipl.generate.repetition): a stutter said once, a loop ended;
    the model's own text (model_acc) is scored as written."""
    texts = {"image": "selling my phone, " + "phone " * 10 + "Huawei P30, blue",
             "image+category:unguarded": "selling my phone, Huawei P30, Huawei P30, blue, blue."}
    records = [record("indexed_sku", "a", texts)]
    out = score(run_cfg, records, {f"a:{c}": t for c, t in texts.items()}, sim=None)
    rows = out["table"]["indexed_sku"]
    ex = {e["listing_id"]: e for e in out["examples"]}["a"]["generated"]
    assert ex["image"]["text"] == "selling my phone."  # the loop ended the text: nothing after it is sent
    assert rows["image"]["repetition_ended"] == 1 and rows["image"]["repeats_edited"] == 1
    assert rows["image"]["acc"] == 0 and rows["image"]["model_acc"] > 0
    assert ex["image+category:unguarded"]["text"] == "selling my phone, Huawei P30, blue."
    unguarded = rows["image+category:unguarded"]
    assert unguarded["repeats_edited"] == 1 and unguarded["repetition_ended"] == 0
    assert unguarded["acc"] == pytest.approx(3 / 4) and unguarded["precision"] == 1.0


def test_a_product_named_by_a_part_of_a_known_value_is_counted():
    """The guard blocks whole values, so "Used iPhone 12" (a part of "iPhone 12 Pro") for a watch, or
    "Michael Vuitton", got through as 0 wrong values; an ordinary first word ("The") is not counted."""
    from ipl.catalog.levels import KeyLevels
    from ipl.eval.match import AttributeMatcher, leading_words, partial_values

    vocab = {"phone": {"Model": ["iPhone 12 Pro", "iPhone 11"], "Brand": ["Apple"]},
             "handbag": {"Brand": ["Michael Kors", "Louis Vuitton"]}, "jacket": {"Brand": ["The North Face"]},
             "watch": {"Color": ["Deep Blue"]}}
    texts = ["The jacket is warm", "Selling the watch, the strap is new", "my iPhone 12 Pro", "Michael Kors bag",
             "the box is there", "the end"]
    m = AttributeMatcher()
    leads = leading_words(vocab, KeyLevels(), texts, m)
    assert set(leads) == {"iPhone", "Michael", "Louis"}  # "The" is ordinary; "Deep" is not a product value
    watch = {"Brand": "Seiko", "Model": "Presage"}
    assert partial_values("Used iPhone 12, works perfectly.", watch, leads, m) == ["iPhone"]
    assert partial_values("Letting go of my Michael Vuitton", watch, leads, m) == ["Michael"]
    assert partial_values("Used iPhone 12 Pro", watch, leads, m) == []  # a whole value: the wrong values count it
    assert partial_values("My iPhone 11, like new", {"Brand": "Apple", "Model": "iPhone 11"}, leads, m) == []
    assert partial_values("The jacket, the warmest", {"Brand": "Uniqlo"}, leads, m) == []
    assert partial_values("My own iphone case", watch, leads, m) == []  # as written only, like the guard


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
    row = {"acc": 0.5, "precision": 0.9, "abstained": 0.2, "contradicted_values": 3, "hallucination": 0.1, "sim": 0.7, "bleu1": 0.4, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1,
           "rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45, "descriptions": 10, "style": {"casual": 0.9}}
    table = {"indexed_sku": {c: dict(row, acc=0.2 + 0.1 * i) for i, c in enumerate(CONDITIONS)}}
    md = ablation_table(table["indexed_sku"])
    assert md.splitlines()[0].startswith("| row | n | ACC | Prec. | Halluc. | Abstained | SIM | BLEU1")
    assert "| image+category+reference | 10 | 0.500 | 0.900 | 0.100 | 0.200 | 0.700 |" in md
    plots = plot_ablation(table, tmp_path)
    assert all((tmp_path / p).read_bytes().startswith(b"\x89PNG") for p in plots) and len(plots) == 6
    result = {"run": "runs/x", "command": "ipl eval", "model": {"vlm": "v", "fingerprint": "f"},
              "ablation": {"table": table, "skipped": {"unseen_sku": "no validation split"}},
              "retrieval": {"indexed_sku": {"queries": 10, "identical_top1": 0.8, "similar_top1": 0.9,
                                            "same_spu_colour_top1": 0.85, "same_spu_colour_top1_text": 0.75, "category_top1": 1.0, "with_reference": 1.0, "fallbacks": {}}},
              "realdata": {"skipped": "no fixtures"}}
    text = render(result, plots)
    assert "## RAG ablation" in text and "0.200 -> image+category+reference 0.500 (2.50x)" in text
    assert "set `unseen_sku` skipped: no validation split" in text and "![ablation_acc.png]" in text
    assert "| unseen photos of indexed SKUs | 10 | 0.800 | 0.850 | 0.750 | 0.900 | 1.000 |" in text


def test_configs_validate(tmp_path):
    for f in ("jobs/configs/eval_local.yaml", "jobs/configs/eval_cluster.yaml"):
        load_config(EvalConfig, f)
    with pytest.raises(ConfigError, match="conditions"):
        load_config(EvalConfig, None, ["conditions=[image,image]"])
    with pytest.raises(ConfigError, match="conditions"):
        load_config(EvalConfig, None, ["conditions=[image,text_only]"])
    with pytest.raises(ConfigError, match="sets.indexed_sku"):
        load_config(EvalConfig, None, ["sets.indexed_sku=-1"])


def test_a_near_model_number_is_counted():
    from ipl.eval.match import AttributeMatcher, near_misses

    m = AttributeMatcher()
    known = {"Brand": ["Sony"], "Model": ["WH-1000XM4", "WF-1000XM3"]}
    truth = {"Brand": "Sony", "Model": "WH-1000XM4"}
    assert near_misses("Selling my Sony WH-1000XM3, like new", truth, known, m) == ["WH-1000XM3"]
    assert near_misses("Selling my Sony WH-1000XM4, like new", truth, known, m) == []
    assert near_misses("Selling my Sony WF-1000XM3", truth, known, m) == []  # a whole known value: counted as wrong


def test_a_draft_calling_the_item_by_another_categorys_name_is_counted():
    """"My own watch" for a phone names the wrong item; "phone" in a headphones' draft is what its
    sellers write ("works with any phone"), so it is not counted there."""
    from ipl.eval.match import category_words, other_category

    pairs = [("phone", "iPhone 12, barely used"), ("phone", "Galaxy S10 in blue"),
             ("headphones", "Sony headphones, works with any phone"), ("headphones", "AirPods Pro, pairs with my phone"),
             ("watch", "Seiko watch, new strap"), ("watch", "Casio G-Shock")]
    words = category_words(pairs)
    assert set(words["phone"]) == {"headphones", "watch"} and set(words["headphones"]) == {"watch"}
    assert other_category("My own watch, works perfectly.", "phone", words) == ["watch"]
    assert other_category("Two WATCHES for sale", "headphones", words) == ["watch"]
    assert other_category("Sony headphones, works with any phone", "headphones", words) == []
    assert other_category("Selling my phone", "phone", words) == []
