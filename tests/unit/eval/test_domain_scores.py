"""The domain benchmark's string-match scores (paper Appendix E)."""
import json

import pytest

from ipl.eval.domain import category_score, description_score, extraction_score, instruction_items, word_f1


def test_category_is_named():
    assert category_score("jacket", "jacket") == 1 and category_score("Jacket. Selling my", "jacket") == 1
    assert category_score("a phone", "phone") == 1 and category_score("phones", "phone") == 0
    assert category_score("sneakers", "jacket") == 0 and category_score("", "jacket") == 0


def test_extraction_counts_matched_values():
    target = json.dumps({"Brand": "Huawei", "Color": "Blue", "Model": None})
    assert extraction_score('{"Brand": "huawei", "Color": "Red"}', target) == 0.5
    assert extraction_score("no json here", target) == 0.0
    assert extraction_score("{}", json.dumps({})) is None  # nothing to match: not scored


def test_word_f1_and_description_recall():
    assert word_f1("a b c", "a b c") == 1 and word_f1("x", "a") == 0
    assert word_f1("a b", "a b c d") == pytest.approx(2 * 1 * 0.5 / 1.5)
    msgs = [{"role": "user", "content": [{"type": "text", "text": 'Facts: <reference>{"Brand": "Seiko", '
                                                                  '"Color": "Black"}</reference>'}]}]
    assert description_score("Selling my Seiko watch", msgs) == 0.5
    assert description_score("anything", [{"role": "user", "content": "no facts"}]) is None


def test_missing_instructions_give_no_items(tmp_path):
    assert all(v == [] for v in instruction_items(tmp_path, 5).values())


def test_tagging_and_condition_scores():
    from ipl.eval.domain import condition_score, score_item, tagging_score

    assert tagging_score("worn twice; with the original box", "with the original box; worn twice") == 1
    assert tagging_score("worn twice", "worn twice; no box") == pytest.approx(2 / 3)
    assert tagging_score("none", "none") == 1 and tagging_score("worn twice", "none") == 0
    grades = ["like new", "good", "fair"]
    assert condition_score("Good.", "good", grades) == 1 and condition_score("like new, good", "good", grades) == 0
    assert condition_score("excellent", "good", grades) == 0
    assert score_item({"task": "mercari_condition", "target": "fair", "grades": grades}, "fair I think") == 1


def test_mercari_items_map_the_condition_field(tmp_path):
    from ipl.eval.domain import mercari_items

    d = tmp_path / "mercari"
    d.mkdir()
    rows = ["train_id\tname\titem_condition_id\tcategory_name\tbrand_name\tprice\tshipping\titem_description",
            "0\tNike shoes\t1\tMen/Shoes\tNike\t10\t1\tNike running shoes, barely worn",
            "1\tOld tee\t4\tMen/Tops\t\t5\t1\tNo description yet",
            "2\tMug\t5\tHome/Kitchen\t\t5\t1\tchipped on the rim"]
    (d / "listings.tsv").write_text("\n".join(rows) + "\n")
    items = mercari_items(tmp_path, 5)
    assert [(i["task"], i["target"]) for i in items] == [
        ("mercari_brand", json.dumps({"Brand": "Nike"})), ("mercari_condition", "like new"),
        ("mercari_condition", "fair")]  # no description: no condition item
    assert "like new, good, fair" in items[1]["messages"][0]["content"]
    assert mercari_items(tmp_path / "none", 5) == []
