"""Caption quality and CQE-against-the-oracle metrics on hand-made captions."""
import pytest

from ipl.caption.quality import caption_quality

VOCAB = {"Brand": ["Huawei", "Apple"], "Color": ["Navy", "Black"], "Model": ["Mate 40", "iPhone 13"]}
TRUTH = {"Brand": "Huawei", "Color": "Navy", "Model": "Mate 40"}
KEYS = ["Brand", "Model", "Color"]


def case(caption, keep):
    return {"caption": caption, "truth": TRUTH, "vocabulary": VOCAB, "keep": keep}


def test_precision_recall_for_all_and_kept_captions_and_cqe_against_the_oracle():
    cases = [case("A navy phone. Logo text: Huawei.", True),        # good, kept
             case("A black phone. Logo text: Huawei.", True),       # 1 wrong: not good, kept (CQE error)
             case("A phone. Model text: Mate 40.", False),           # good, dropped (CQE error)
             case("A phone.", False)]                                # states nothing: not good, dropped
    q = caption_quality(cases, KEYS)
    assert q["all"]["values_stated"] == 5 and q["all"]["correct"] == 4 and q["all"]["wrong"] == 1
    assert q["all"]["precision"] == pytest.approx(0.8) and q["all"]["recall"] == pytest.approx(4 / 12, abs=1e-4)
    assert q["kept"]["captions"] == 2 and q["kept"]["precision"] == pytest.approx(0.75)
    c = q["cqe"]
    assert c["oracle_good"] == 2 and c["kept"] == 2 and c["agreement"] == 0.5
    assert c["precision"] == 0.5 and c["recall"] == 0.5 and c["kept_share"] == 0.5


def test_nothing_kept_reports_none_not_a_perfect_score():
    q = caption_quality([case("A phone.", False)], KEYS)
    assert q["kept"]["precision"] is None and q["cqe"]["precision"] is None and q["cqe"]["recall"] is None
    assert q["all"]["precision"] is None and q["all"]["recall"] == 0.0
