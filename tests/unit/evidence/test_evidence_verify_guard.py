"""Verification after generation and the decode-time guard, on hand-made texts and a real tokenizer."""
import torch

from ipl.evidence.verify import check, clauses, repair, verify
from ipl.extract.matcher import AttributeMatcher, guarded_words, states_word
from ipl.generate.guard import TokenSequences, ValueGuard, blocked_values, token_sequences

M = AttributeMatcher([["grey", "gray"]])
VOCAB = {"Brand": ["Apple", "Samsung", "Sony"], "Model": ["iPhone 12", "iPhone 12 Pro", "Galaxy S10"],
         "Color": ["Blue", "Red", "Grey"]}


def test_clauses_round_trip():
    text = "Selling my iPhone, blue; barely used. 自用，成色如图。"
    assert "".join(clauses(text)) == text and len(clauses(text)) == 5


def test_check_finds_contradictions_and_unsupported_values_but_not_parts_or_synonyms():
    facts = {"Brand": "Apple", "Model": "iPhone 12 Pro", "Color": "Grey"}
    assert check("My Apple iPhone 12 Pro in gray.", facts, [], VOCAB, M) == []
    found = check("My Samsung iPhone 12 Pro, red.", facts, [], VOCAB, M)
    assert {(p["key"], p["stated"], p["kind"]) for p in found} == {("Brand", "Samsung", "contradiction"),
                                                                   ("Color", "Red", "contradiction")}
    unsupported = check("Apple phone, blue", {"Brand": "Apple"}, ["Color"], VOCAB, M)
    assert unsupported == [{"key": "Color", "stated": "Blue", "expected": None, "kind": "unsupported"}]


def test_repair_drops_the_clause_and_reports_it():
    text, verification = verify("Selling my Apple iPhone 12, red colour, works great.", {"Brand": "Apple"},
                                ["Color"], VOCAB, M)
    assert text == "Selling my Apple iPhone 12, works great."
    assert verification["repaired"] and verification["ok"] and verification["removed"] == ["red colour,"]
    same, v = verify("Selling my Apple phone.", {"Brand": "Apple"}, ["Color"], VOCAB, M)
    assert same == "Selling my Apple phone." and v == {"checked": 2, "problems": [], "repaired": False,
                                                       "removed": [], "added": [], "ok": True}
    assert repair("Red, blue.", ["Red", "Blue"], M) == ("", ["Red,", "blue."])


def test_facts_the_model_left_out_are_appended_when_asked():
    text, v = verify("Selling my Apple phone, works", {"Brand": "Apple", "Color": "Blue"}, [], VOCAB, M,
                     add_missing=True)
    assert text == "Selling my Apple phone, works. Color: Blue." and v["added"] == ["Color"]
    assert verify("Selling my Apple phone.", {"Brand": "Apple", "Color": "Blue"}, [], VOCAB, M)[0] == \
        "Selling my Apple phone."  # off by default
    zh, v = verify("自用手机", {"品牌": "苹果"}, [], {}, M, add_missing=True, language="zh")
    assert zh == "自用手机。品牌：苹果。" and v["added"] == ["品牌"]


def test_blocked_values_keep_the_facts_their_parts_and_synonyms():
    blocked = blocked_values({"Model": "iPhone 12 Pro", "Color": "Grey"}, ["Brand"], VOCAB, M)
    assert set(blocked) == {"Galaxy S10", "Blue", "Red", "Apple", "Samsung", "Sony"}
    assert blocked_values({}, ["Brand", "Model", "Color"], VOCAB, M, limit=4) == ["Apple", "Samsung", "Sony",
                                                                                 "iPhone 12"]


LEADS = {"iPhone": ["iPhone 12", "iPhone 12 Pro"], "Michael": ["Michael Kors"], "Watch": ["Watch SE"]}
BAGS = {**VOCAB, "Brand": [*VOCAB["Brand"], "Michael Kors", "Louis Vuitton"], "Model": [*VOCAB["Model"], "Watch SE"]}


def test_leading_words_are_guarded_unless_a_fact_holds_them():
    """A product named by a part ("Michael Vuitton", "Used iPhone 12" for a watch) got past the guard
    of whole values: the leading word of a value the evidence does not support is blocked too,
    as written only, and allowed when a fact contains it."""
    assert guarded_words(LEADS, {}, ["Brand", "Model"], BAGS, M) == {"iPhone": "Model", "Michael": "Brand",
                                                                     "Watch": "Model"}
    # "iPhone 12 Pro" is blocked beside the fact "iPhone 12", but its first word is the fact's too
    assert guarded_words(LEADS, {"Model": "iPhone 12", "Brand": "Michael Kors"}, [], BAGS, M) == {"Watch": "Model"}
    assert guarded_words(LEADS, {"Brand": "Apple"}, [], BAGS, M) == {"Michael": "Brand"}  # another brand
    assert guarded_words(LEADS, {}, ["Color"], BAGS, M) == {}  # no blocked value starts with them
    blocked = blocked_values({"Model": "iPhone 12"}, ["Color"], BAGS, M, leads=LEADS)
    assert blocked[:1] == [["Watch"]] and "iPhone 12 Pro" in blocked and "iPhone" not in blocked
    assert blocked_values({"Model": "iPhone 12"}, ["Color"], BAGS, M) == blocked[1:]  # without leads: as before
    assert states_word("Watch", "Watch in box.") and not states_word("Watch", "Great watch, Watches too")


def test_a_leading_word_is_banned_as_written_only(tiny_vlm):
    tok = tiny_vlm.processor.tokenizer
    word = {tuple(s) for s in token_sequences(tok, [["Watch"]])}
    assert word == {tuple(tok.encode(f, add_special_tokens=False)) for f in ("Watch", " Watch")}
    assert {tuple(tok.encode(" watch", add_special_tokens=False))} <= {tuple(s) for s in token_sequences(tok, ["Watch"])}
    assert not {tuple(tok.encode(" watch", add_special_tokens=False))} & word


def test_verification_drops_a_product_named_by_a_part():
    text, v = verify("Letting go of my Michael Vuitton, black leather. Great watch.", {}, ["Brand"], BAGS, M,
                     leads=LEADS)
    assert text == "black leather. Great watch." and v["ok"]
    assert v["problems"] == [{"key": "Brand", "stated": "Michael", "expected": None, "kind": "partial"}]
    # a clause that also states a fact keeps the fact and loses only the word
    text, v = verify("Used iPhone 12 Apple watch.", {"Brand": "Apple"}, ["Model"], BAGS, M, leads=LEADS)
    assert text == "Used Apple watch." and v["ok"] and [p["kind"] for p in v["problems"]] == ["unsupported"]
    text, v = verify("Used iPhone, Apple watch.", {"Brand": "Apple"}, ["Model"], BAGS, M, leads=LEADS)
    assert text == "Apple watch." and [p["kind"] for p in v["problems"]] == ["partial"] and v["ok"]
    # the ordinary word in lower case, and the word beside the fact that holds it, are no problem
    assert check("Great watch, works.", {"Brand": "Apple"}, ["Model"], BAGS, M, LEADS) == []
    assert check("My iPhone 12, like new.", {"Model": "iPhone 12"}, [], BAGS, M, LEADS) == []


def test_a_model_number_one_character_off_a_known_one_is_dropped():
    from ipl.extract.matcher import near_values

    phones = {"Brand": ["Sony", "Bose"], "Model": ["WH-1000XM4", "WF-1000XM3", "QC35 II"], "Case size": ["44mm", "42mm"],
              "Storage": ["128GB", "256GB"]}
    facts = {"Brand": "Sony", "Model": "WF-1000XM3"}
    text, v = verify("Up for grabs: Sony WH-1000XM3, works perfectly. Ask me anything.", facts, ["Case size"], phones,
                     M, add_missing=True)
    assert v["problems"] == [{"key": "Model", "stated": "WH-1000XM3", "expected": "WF-1000XM3", "kind": "near"}]
    assert text == "Up for grabs: Sony, works perfectly. Ask me anything. Model: WF-1000XM3." and v["ok"]
    # a made-up measure one off a known one; the facts (in any spelling) and known values are never near values
    assert near_values("Bose QC36, 43mm case", {"Brand": "Bose"}, ["Model", "Case size"], phones, M) == {
        "QC36": "Model", "43mm": "Case size"}
    assert near_values("Sony WF1000XM3, 256GB, 44mm, model 2019", facts, ["Case size"], phones, M) == {}
    assert near_values("QC36", {}, ["Brand"], phones, M) == {}  # only the keys the draft is about
    assert near_values("It has 128GC", {}, ["Storage"], phones, M) == {"128GC": "Storage"}
    # Chinese text has no spaces: the code-like word is the Latin run ("自用索尼WF-1000XM3" states the fact)
    assert near_values("自用索尼WF-1000XM3，成色如图", facts, [], phones, M) == {}
    assert near_values("自用索尼WH-1000XM3，成色如图", facts, [], phones, M) == {"WH-1000XM3": "Model"}
    # the seller's own words are theirs to state: a model number from their notes stays
    text, v = verify("Sony WH-1000XM3, works.", facts, [], phones, M, notes="my old WH-1000XM3, no box")
    assert text == "Sony WH-1000XM3, works." and v["problems"] == []


def test_cached_token_sequences_equal_the_direct_ones_and_encode_each_value_once(tiny_vlm):
    """The evaluation's workers and the Generator tokenize a value once (a third of the evaluation's
    generation time went to re-encoding the same values per prompt) and get the same sequences."""
    tok = tiny_vlm.processor.tokenizer
    calls = []

    class Counting:  # the tokenizer, counting the strings it is asked to encode
        is_fast = True

        def __call__(self, forms, **kw):
            calls.extend(forms)
            return tok(forms, **kw)

    cached = TokenSequences(Counting())
    first = ["iPhone 12 Pro", ["Watch"], "Galaxy S21"]
    assert [tuple(s) for s in cached(first)] == [tuple(s) for s in token_sequences(tok, first)]
    n = len(calls)
    assert n == len(set(calls)) and n > 0
    again = ["Galaxy S21", "iPhone 12 Pro", "Pixel 7"]  # two known values, one new
    assert [tuple(s) for s in cached(again)] == [tuple(s) for s in token_sequences(tok, again)]
    assert calls[n:] and all("Pixel" in f or "PIXEL" in f or "pixel" in f for f in calls[n:])
    assert cached(again) is cached(list(again))  # a whole list seen before is handed out again
    # the guard built from a handed-out list masks as one built from a fresh copy
    ids = torch.tensor([[1, *tok.encode(" Pixel", add_special_tokens=False)]])
    shared, fresh = ValueGuard([cached(again)], 1), ValueGuard([[list(s) for s in cached(again)]], 1)
    assert torch.equal(shared(ids, torch.zeros(1, len(tok) + 8)), fresh(ids, torch.zeros(1, len(tok) + 8)))
    assert ValueGuard([cached(again)], 1).rows[0] is shared.rows[0]  # its table built once


def test_value_guard_masks_the_last_token_after_its_prefix():
    guard = ValueGuard([[[5, 6, 7], [9]], []], prompt_len=2)
    ids = torch.tensor([[1, 2, 5, 6], [1, 2, 5, 6]])
    scores = guard(ids, torch.zeros(2, 12))
    assert scores[0, 7] == -float("inf") and scores[0, 9] == -float("inf")  # after 5 6: 7; 9 always
    assert torch.isfinite(scores[0, [0, 5, 6, 8]]).all() and torch.isfinite(scores[1]).all()  # row 2 has none
    early = guard(torch.tensor([[5, 6]]), torch.zeros(1, 12))  # the prefix in the prompt does not count
    assert torch.isfinite(early[0, 7])


def test_guard_stops_a_real_model_writing_a_blocked_value(tiny_vlm):
    """The tiny Qwen2-VL's greedy text states a word unguarded; with that word blocked it does not."""
    import re

    from transformers import LogitsProcessorList

    model, tok = tiny_vlm.model.eval(), tiny_vlm.processor.tokenizer
    prompt = tok("Selling my", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        free = tok.decode(model.generate(prompt, max_new_tokens=16, do_sample=False)[0, prompt.shape[1]:])
    words = [w for w in re.findall(r"[A-Za-z]{2,}", free)]
    assert words, free
    value = words[0]
    guard = ValueGuard([token_sequences(tok, [value])], prompt.shape[1])
    with torch.no_grad():
        held = model.generate(prompt, max_new_tokens=16, do_sample=False, logits_processor=LogitsProcessorList([guard]))
    text = tok.decode(held[0, prompt.shape[1]:])
    assert not M.states(value, text), (value, free, text)


def test_another_categorys_name_is_blocked_and_dropped():
    """'Letting go of my watch' for a jacket (seen in a demo run's system row): the other categories'
    names that this category's sellers rarely write are blocked, singular and plural, and a draft
    stating one loses the clause."""
    from ipl.extract.matcher import category_forms

    assert category_forms(["watch", "sneakers"]) == ["watch", "watches", "sneaker", "sneakers"]
    blocked = blocked_values({"Color": "Yellow"}, [], VOCAB, M, elsewhere=["watch"])
    assert {"watch", "watches"} <= set(blocked) and "Yellow" not in blocked
    text, v = verify("Letting go of my watch, no issues at all. Yellow, warm.", {"Color": "Yellow"}, [], VOCAB, M,
                     elsewhere=["watch"])
    assert text == "no issues at all. Yellow, warm." and v["ok"]
    assert [(p["kind"], p["stated"]) for p in v["problems"]] == [("category", "watch")]
    assert check("Selling my jacket, works with a stopwatch", {}, [], VOCAB, M, None, ["watch"]) == []
