"""Instruction formats: the assistant turn is the target; references only in desc_reference; SKU split."""
import json

import numpy as np

from ipl.data.instructions import InstructionConfig, MakeInstructions

TEMPLATES = {"phone": ["Brand", "Model", "Storage", "Color"], "watch": ["Brand", "Model"]}


def listing(i, sku="phone/a/b/blue/64gb", cat="phone"):
    return {"listing_id": f"L{i:04d}", "category": cat, "text": f"Selling my Huawei P30, 64GB, Blue. Item {i}.",
            "photos": [b"\xff\xd8jpeg"], "sku_id": sku, "language": "en",
            "extracted": json.dumps({"Brand": "Huawei", "Model": "P30", "Storage": "64GB", "Color": "Blue"})}


def run(rows, **cfg):
    batch = {k: np.array([r[k] for r in rows] + [None], dtype=object)[:-1] for k in rows[0]}
    refs = {}
    for r in rows:
        refs.setdefault(r["sku_id"], []).append((r["listing_id"], json.loads(r["extracted"])))
    out = MakeInstructions(InstructionConfig(**cfg), TEMPLATES, refs)(batch)
    return [dict(zip(out, vals)) for vals in zip(*out.values())]


def test_description_tasks_and_targets_match_serving():
    """Prompts name only facts and the unknown keys; targets never state a value of an unknown key."""
    from ipl.extract.matcher import AttributeMatcher

    m = AttributeMatcher()
    truth = {"Brand": "Huawei", "Model": "P30", "Storage": "64GB", "Color": "Blue"}
    rows = run([listing(i) for i in range(80)], category_prob=0, extraction_prob=0, caption_prob=0)
    tasks = {r["task"] for r in rows}
    assert tasks == {"desc_image", "desc_template", "desc_reference"}
    partial = 0
    for r in rows:
        msgs = json.loads(r["messages"])
        assert [m_["role"] for m_ in msgs] == ["system", "user", "assistant"]
        assert msgs[-1]["content"] == r["target"]
        user_text = msgs[1]["content"][-1]["text"]
        assert msgs[1]["content"][0] == {"type": "image"}
        assert ("The item is a phone" in user_text) == (r["task"] != "desc_image")
        facts = json.loads(user_text.split("<reference>")[1].split("</reference>")[0]) \
            if "<reference>" in user_text else {}
        assert not facts or r["task"] == "desc_reference"
        assert all(truth[k] == v for k, v in facts.items())  # facts are true values of the item
        unknown = [k for k in truth if k not in facts]
        if r["task"] != "desc_image" and unknown:
            assert "Unknown (leave out): " + ", ".join(unknown) in user_text
        for k in unknown:  # the target never states what the prompt says is unknown
            assert not m.states(truth[k], r["target"]), (k, r["target"])
        for k in facts:
            assert m.states(truth[k], r["target"]), (k, r["target"])
        partial += r["task"] == "desc_reference" and 0 < len(facts) < 4
        assert r["target"].endswith(f"Item {int(r['listing_id'][1:])}.")
    assert partial >= 5  # references are partial, as the evidence states them when serving


def test_reference_never_comes_from_the_listing_itself():
    rows = run([listing(1, sku="phone/x/only")], desc_weights={"desc_reference": 1.0}, category_prob=0,
               extraction_prob=0)
    assert rows[0]["task"] == "desc_template" and rows[0]["fallback"] == "no_reference"


def test_domain_tasks():
    rows = run([listing(i) for i in range(20)], category_prob=1.0, extraction_prob=1.0, caption_prob=0)
    cat = [r for r in rows if r["task"] == "category"]
    ext = [r for r in rows if r["task"] == "extraction"]
    assert len(cat) == len(ext) == 20
    assert all(json.loads(r["messages"])[-1]["content"] == "phone" for r in cat)
    target = json.loads(json.loads(ext[0]["messages"])[-1]["content"])
    assert target == {"Brand": "Huawei", "Model": "P30", "Storage": "64GB", "Color": "Blue"}
    assert ext[0]["photos"] == []


def test_split_by_group():
    rows = run([listing(i, sku=f"phone/s/{i % 40}") for i in range(400)], validation_fraction=0.2, category_prob=0,
               extraction_prob=0, caption_prob=0)
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    n_val = sum(s == {"validation"} for s in by_group.values())
    assert 2 <= n_val <= 16


def test_messages_render_with_the_chat_template(tokenizer):
    rows = run([listing(i) for i in range(3)], category_prob=0, extraction_prob=0)
    text = tokenizer.apply_chat_template(json.loads(rows[0]["messages"]), tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert text.rstrip().endswith(rows[0]["target"] + "<|im_end|>")


def test_caption_task_states_only_what_the_photos_show():
    """The caption target is the category and the visible keys' true values (never storage, never a
    value the photos do not show); a listing whose photos show another SKU yields no caption."""
    truth = {"Brand": "Honor", "Model": "X10", "Storage": "128GB", "Color": "Navy"}
    rows = [{**listing(i), "attributes": json.dumps(truth)} for i in range(10)]
    rows.append({**listing(10), "attributes": json.dumps(truth), "photo_sku_id": "phone/other"})
    for r in rows[:10]:
        r["photo_sku_id"] = r["sku_id"]
    out = run(rows, category_prob=0, extraction_prob=0, caption_prob=1.0)
    caps = [r for r in out if r["task"] == "caption"]
    assert len(caps) == 10 and "L0010" not in {r["listing_id"] for r in caps}
    msgs = json.loads(caps[0]["messages"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"] and msgs[-1]["content"] == caps[0]["target"]
    prompt = msgs[1]["content"][-1]["text"]
    assert "phone" in prompt and "Brand, Model, Color" in prompt and "Storage" not in prompt
    assert caps[0]["target"] == "A navy phone. Logo text: Honor. Model text: X10."  # the truth, not the text's P30
    assert caps[0]["photos"] and caps[0]["photos"][0] == b"\xff\xd8jpeg"
    # without a ground-truth column (real listings) the values extracted from the text are used
    plain = run([listing(i) for i in range(4)], category_prob=0, extraction_prob=0, caption_prob=1.0,
                caption_keys=["Color"])
    assert {r["target"] for r in plain if r["task"] == "caption"} == {"A blue phone."}


def test_the_caption_task_is_in_the_training_mix():
    from ipl.data.instructions import TASKS
    from ipl.train.config import ALL_TASKS, DataConfig

    assert "caption" in TASKS and set(TASKS) == set(ALL_TASKS)
    assert "caption" in DataConfig().tasks


def test_a_caption_cue_in_the_prompt_never_changes_what_the_target_states():
    """With the cue, the prompt shows what the photos show; the target still states only the facts
    (the model learns a caption's value is not a fact)."""
    from ipl.extract.matcher import AttributeMatcher

    m = AttributeMatcher()
    rows = [{**listing(i), "attributes": json.dumps({"Brand": "Huawei", "Model": "P30", "Color": "Blue"})}
            for i in range(40)]
    plain = {r["id"]: r for r in run(rows, category_prob=0, extraction_prob=0, caption_prob=0, caption_cue_prob=0)}
    cued = run(rows, category_prob=0, extraction_prob=0, caption_prob=0, caption_cue_prob=1.0)
    with_cue = [r for r in cued if r["task"] in ("desc_template", "desc_reference")]
    assert with_cue
    for r in with_cue:
        prompt = json.loads(r["messages"])[1]["content"][-1]["text"]
        assert "<caption>A blue phone. Logo text: Huawei. Model text: P30.</caption>" in prompt
        assert r["target"] == plain[r["id"]]["target"]
        if "Unknown (leave out): " in prompt and "Color" in prompt.split("Unknown (leave out): ")[1]:
            assert not m.states("Blue", r["target"])
    assert all("<caption>" not in json.loads(r["messages"])[1]["content"][-1]["text"]
               for r in cued if r["task"] == "desc_image")


def test_tagging_and_condition_tasks():
    """Content tagging states the listing-level values the text gave (none: 'none'); the condition task's
    target is the row's grade, asked as one of the configured grades; others yield no row."""
    from ipl.extract.tasks import parse_grade, parse_tags

    templates = {**TEMPLATES, "sneakers": ["Brand", "Model", "Size", "Color", "Condition", "Box"]}
    rows = []
    for i in range(12):
        ext = {"Brand": "Nike", "Model": "Air Max 90", "Size": "42", "Condition": "worn a few times"}
        if i % 2:
            ext["Box"] = "with the original box"
        if i == 11:
            ext = {"Brand": "Nike"}
        rows.append({**listing(i, sku=f"sneakers/{i}", cat="sneakers"), "extracted": json.dumps(ext),
                     "condition": ["like new", "good", "fair", "excellent"][i % 4]})
    batch = {k: np.array([r[k] for r in rows] + [None], dtype=object)[:-1] for k in rows[0]}
    out = MakeInstructions(InstructionConfig(category_prob=0, extraction_prob=0, caption_prob=0, tagging_prob=1,
                                             condition_prob=1), templates, {})(batch)
    out = [dict(zip(out, vals)) for vals in zip(*out.values())]
    tags = {r["listing_id"]: r for r in out if r["task"] == "tagging"}
    assert len(tags) == 12
    assert tags["L0001"]["target"] == "worn a few times; with the original box"
    assert tags["L0000"]["target"] == "worn a few times" and tags["L0011"]["target"] == "none"
    msgs = json.loads(tags["L0001"]["messages"])
    assert [m["role"] for m in msgs] == ["user", "assistant"] and "Condition, Box" in msgs[0]["content"]
    assert "Brand" not in msgs[0]["content"].split("about:")[1].split(".")[0]  # only listing-level keys
    assert tags["L0001"]["photos"] == []
    assert parse_tags("Worn a few times; with the original box.") == {"worn a few times", "with the original box"}
    assert parse_tags("none") == set()
    cond = {r["listing_id"]: r["target"] for r in out if r["task"] == "condition"}
    assert cond == {f"L{i:04d}": ["like new", "good", "fair"][i % 4] for i in range(12) if i % 4 != 3}
    prompt = json.loads(next(r for r in out if r["task"] == "condition")["messages"])[0]["content"]
    assert "like new, good, fair" in prompt
    assert parse_grade("It is in good shape, like new!", ["like new", "good", "fair"]) == "good"
    assert parse_grade("no idea", ["like new", "good", "fair"]) is None


def test_references_do_not_depend_on_the_order_the_listings_are_read_in():
    """Ray Data writes the kept listings' files in the order blocks finish: the references of a
    group (what desc_reference rows are built from) must be the same whatever that order."""
    from ipl.data.pipeline import reference_rows

    rows = [{"listing_id": f"L{i:03d}", "sku_id": f"s{i % 3}", "extracted": json.dumps({"Brand": f"b{i}"})}
            for i in range(30)]
    forward = reference_rows(rows, "sku_id")
    backward = reference_rows(list(reversed(rows)), "sku_id")
    shuffled = reference_rows([rows[i] for i in np.random.default_rng(0).permutation(30)], "sku_id")
    assert forward == backward == shuffled
    assert [lid for lid, _ in forward["s1"]] == ["L001", "L004", "L007", "L010"]  # the 4 smallest ids, sorted
    assert forward["s1"][0][1] == {"Brand": "b1"}


def test_the_items_own_condition_is_stated_only_when_given():
    """A listing-level value (the item's condition) is never another listing's and no evidence
    supports it: a target states it only when the prompt gives it as a fact (as after the seller
    confirmed it: the listing's own value); otherwise the prompt names the key unknown and the
    clause stating it is cut, so a draft never makes up "battery health 80%"."""
    import ipl.data.instructions as ins
    from ipl.extract.matcher import AttributeMatcher

    m = AttributeMatcher()
    templates = {"phone": ["Brand", "Model", "Color", "Battery"]}

    def own(i):
        battery = "battery health 80%" if i % 2 else "battery health 95%"
        return {"listing_id": f"L{i:04d}", "category": "phone", "sku_id": "phone/a/b/blue",
                "text": f"Selling my Huawei P30, Blue, {battery}. Item {i}.", "photos": [b"\xff\xd8jpeg"],
                "language": "en", "extracted": json.dumps({"Brand": "Huawei", "Model": "P30", "Color": "Blue",
                                                           "Battery": battery})}

    rows_in = [own(i) for i in range(60)]
    batch = {k: np.array([r[k] for r in rows_in] + [None], dtype=object)[:-1] for k in rows_in[0]}
    refs = {"phone/a/b/blue": [(r["listing_id"], json.loads(r["extracted"])) for r in rows_in]}
    out = ins.MakeInstructions(InstructionConfig(category_prob=0, extraction_prob=0, caption_prob=0,
                                                 tagging_prob=0), templates, refs)(batch)
    given = cut = 0
    for lid, task, msgs, target in zip(out["listing_id"], out["task"], out["messages"], out["target"]):
        battery = "battery health 80%" if int(lid[1:]) % 2 else "battery health 95%"
        user_text = json.loads(msgs)[1]["content"][-1]["text"]
        facts = json.loads(user_text.split("<reference>")[1].split("</reference>")[0]) \
            if "<reference>" in user_text else {}
        if "Battery" in facts:
            assert facts["Battery"] == battery and m.states(battery, target)  # the listing's own value
            given += 1
        else:
            assert "battery health" not in target, target
            assert task == "desc_image" or "Battery" in user_text.split("Unknown (leave out): ")[1]
            cut += 1
    assert given >= 5 and cut >= 20
