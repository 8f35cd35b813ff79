"""Attribute recall and casual-style scoring of generated descriptions."""
from ipl.generate.prompts import description_messages, description_prompt
from ipl.catalog.levels import KeyLevels
from ipl.train.quality import is_casual, reference_of, score, without_reference


def test_reference_is_read_back_from_the_prompt():
    ref = {"Brand": "Huawei", "Model": "Mate 10 Pro", "Storage": "128GB"}
    msgs = description_messages(1, description_prompt("phone", ["Brand", "Model"], ref), "en", "x")
    assert reference_of(msgs) == ref
    assert reference_of(description_messages(1, description_prompt("phone", ["Brand"]), "en")) is None


def test_recall_counts_grounded_values_with_spelling_tolerance():
    ref = {"Brand": "Huawei", "Model": "Mate 10 Pro", "Storage": "128GB", "Color": "Blue"}
    keys = list(ref)
    assert score("selling my huawei mate10pro, 128 gb, blue", ref, keys) == (4, 4)
    assert score("selling my Huawei P30 in red", ref, keys) == (1, 4)


def test_listing_level_values_do_not_count():
    keys = ["Brand", "Model", "Storage", "Color", "Version", "Screen condition"]
    assert KeyLevels().scored(keys) == ["Brand", "Model", "Storage", "Color"]
    assert KeyLevels(product=["Marque"], sku=[]).scored(["Marque", "Brand", "condition"]) == ["Marque"]
    assert KeyLevels().level("brand") == "product" and KeyLevels().level("colour") == "sku"


def test_casual_register():
    assert is_casual("Selling my Coach Willow, white, barely used. Ask me anything.")
    assert is_casual("自用华为手机，成色如图")
    assert not is_casual("The best-in-class premium quality handbag!!")
    assert not is_casual("Coach Willow handbag, white canvas.")


def test_without_reference_removes_only_the_reference_sentence():
    ref = {"Brand": "Huawei"}
    msgs = description_messages(1, description_prompt("phone", ["Brand", "Model"], ref), "en", "x")
    bare = without_reference(msgs)
    text = bare[1]["content"][-1]["text"]
    assert text == description_prompt("phone", ["Brand", "Model"])
    assert bare[1]["content"][0] == {"type": "image"} and reference_of(bare) is None
    zh = description_messages(1, description_prompt("phone", ["Brand"], ref, "zh"), "zh")
    assert without_reference(zh)[1]["content"][-1]["text"] == description_prompt("phone", ["Brand"], None, "zh")
