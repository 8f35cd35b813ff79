"""The attribute matcher: synonyms, case, units, token boundaries, contradictions."""
from ipl.synth.catalogue import Catalogue, synonym_groups
from ipl.eval.match import AttributeMatcher, AttributeScore, vocabulary_of

M = AttributeMatcher([["grey", "gray"], ["navy", "navy blue"]])


def test_case_units_and_spacing():
    assert M.states("64GB", "selling my phone, 64 gb storage")
    assert M.states("64 GB", "64GB version")
    assert M.states("iPhone 12 Pro", "my IPHONE-12 pro")
    assert M.states("Mate 10 Pro", "huawei mate10pro")
    assert not M.states("128GB", "64GB version")


def test_synonyms_both_ways():
    assert M.states("Grey", "colour is gray")
    assert M.states("gray", "GREY hoodie")
    assert M.same("Navy", "navy blue")
    assert not M.states("Grey", "colour is blue")


def test_token_boundaries():
    assert not M.states("Red", "bred in the city")
    assert not M.states("S", "it's small")  # a one-letter size is matched case-sensitively on its own
    assert M.states("S", "size S, worn twice")


def test_catalogue_english_and_chinese_forms_are_synonyms():
    m = AttributeMatcher(synonym_groups(Catalogue.build()))
    assert m.states("Huawei", "自用华为手机")
    assert m.states("64GB", "64G内存")


VOCAB = {"Color": {"Blue", "Red", "Black"}, "Model": {"iPhone 12", "iPhone 12 Pro", "Mi 9"}}


def test_contradiction_is_another_known_value():
    truth = {"Color": "Blue", "Model": "iPhone 12 Pro"}
    assert M.contradictions("my iPhone 12 Pro in red", truth, VOCAB) == [("Color", "Red")]
    # "iPhone 12" inside the true "iPhone 12 Pro" is not a contradiction
    assert M.contradictions("my iPhone 12 Pro, blue", truth, VOCAB) == []
    assert M.contradictions("a Mi 9, blue", truth, VOCAB) == [("Model", "Mi 9")]
    assert M.contradictions("nothing stated", truth, VOCAB) == []


def test_score_counts_accuracy_and_hallucination():
    s = AttributeScore()
    truth = {"Color": "Blue", "Model": "iPhone 12 Pro", "Condition": "used"}
    keys = ["Color", "Model"]
    assert s.add(M, "selling my iPhone 12 Pro, blue", truth, keys, VOCAB) == {
        "stated": ["Color", "Model"], "missed": [], "contradicted": [], "abstained": []}
    out = s.add(M, "selling my Mi 9 in red", truth, keys, VOCAB)
    assert out["missed"] == ["Color", "Model"] and sorted(out["contradicted"]) == ["Color=Red", "Model=Mi 9"]
    # empty truth not counted; the colour was left to the seller
    out = s.add(M, "iPhone 12 Pro", {"Color": "", "Model": "iPhone 12 Pro"}, keys, VOCAB, abstained=["Color", "Model"])
    assert out["abstained"] == ["Model"]
    summary = s.summary()
    assert (summary["values"], summary["stated"]) == (5, 3)
    assert summary["acc"] == 3 / 5 and summary["hallucination"] == 1 / 3
    # precision beside recall: 3 true values stated, 2 wrong ones
    assert summary["precision"] == 3 / 5 and summary["contradicted_values"] == 2 and summary["abstained"] == 1 / 5
    assert AttributeScore().summary()["precision"] is None  # nothing stated: no precision, not 0 or 1
    assert summary["per_key"] == {"Color": 0.5, "Model": round(2 / 3, 4)}


def test_vocabulary_per_category():
    v = vocabulary_of([("phone", {"Color": "Blue"}), ("phone", {"Color": "Red", "Brand": ""}), ("bag", {"Color": "Tan"})])
    assert v == {"phone": {"Color": {"Blue", "Red"}}, "bag": {"Color": {"Tan"}}}


def test_another_categorys_brand_is_a_wrong_brand():
    """The demo's draft for a laptop said "Letting go of my Adidas": a brand of another category,
    which neither the guard nor the evaluation knew with the laptop's own list."""
    from ipl.extract.matcher import across_categories
    from ipl.generate.guard import blocked_values

    vocab = vocabulary_of([("laptop", {"Brand": "Apple", "Model": "MacBook Air"}), ("laptop", {"Brand": "Dell"}),
                           ("sneakers", {"Brand": "Adidas", "Size": "EU 42"}), ("jacket", {"Brand": "Uniqlo"})])
    laptop = across_categories(vocab, "laptop")
    assert laptop["Brand"][:2] == ["Apple", "Dell"]  # the category's own values first (a capped list keeps them)
    assert set(laptop["Brand"]) == {"Apple", "Dell", "Adidas", "Uniqlo"}
    assert "Size" not in laptop  # only the category's keys
    assert across_categories(vocab, "camera") == {}
    truth = {"Brand": "Apple"}
    text = "Letting go of my Adidas, light wear on the lid."
    assert M.contradictions(text, truth, vocab["laptop"], ["Brand"]) == []  # the category's list alone missed it
    assert M.contradictions(text, truth, laptop, ["Brand"]) == [("Brand", "Adidas")]
    score = AttributeScore()
    assert score.add(M, text, truth, ["Brand"], laptop)["contradicted"] == ["Brand=Adidas"]
    assert "Adidas" in blocked_values({}, ["Brand"], laptop, M)  # nothing stated: every known brand is blocked
    assert "Adidas" in blocked_values({"Brand": "Apple"}, [], laptop, M)
    assert "Apple" not in blocked_values({"Brand": "Apple"}, [], laptop, M)


def test_the_runs_synonyms_file_is_read_and_checked(tmp_path):
    import json

    import pytest

    from ipl.eval.scoring import run_synonyms
    from ipl.eval.config import EvalConfig

    cfg = EvalConfig(run={"root": str(tmp_path), "name": "r"})
    assert run_synonyms(cfg) == []  # a run without the file (real data): no catalogue synonyms
    (tmp_path / "r" / "raw").mkdir(parents=True)
    (tmp_path / "r" / "raw" / "_synonyms.json").write_text(json.dumps([["Huawei", "华为"]]))
    assert AttributeMatcher(run_synonyms(cfg)).states("Huawei", "自用华为手机")
    (tmp_path / "r" / "raw" / "_synonyms.json").write_text('{"Huawei": "华为"}')
    with pytest.raises(ValueError, match="list of lists"):
        run_synonyms(cfg)
