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
