"""Text filters: each reason on its own case, the first filter wins, errors quarantine."""
import numpy as np
import pytest

from ipl.data.clean import CleanConfig, TextFilters
from ipl.data.contract import MissingColumns

OK = "Personal used Huawei Mate 10 Pro, 128GB, Blue. Condition as shown in the pictures."


def run(rows, **cfg):
    batch = {k: [r.get(k) for r in rows] for k in ("listing_id", "category", "description", "quality_score", "risk_flags")}
    return TextFilters(CleanConfig(**cfg))(batch)


@pytest.mark.parametrize("row,reason", [
    ({"description": OK}, None),
    ({"description": ""}, "missing_text"),
    ({"description": None}, "missing_text"),
    ({"description": OK, "quality_score": 0.2}, "low_quality"),
    ({"description": OK, "risk_flags": ["fraud"]}, "risk_flag"),
    ({"description": OK + " Pay a deposit first by bank transfer."}, "risk_text"),
    ({"description": OK + " Cheaper on my taobao shop."}, "risk_text"),
    ({"description": OK + " Call 138 1234 5678."}, "privacy"),
    ({"description": OK + " 加微信abc_1234"}, "privacy"),
    ({"description": "sell"}, "too_short"),
    ({"description": "自用出"}, "too_short"),
    ({"description": OK * 20}, "too_long"),
    ({"description": "★☆♥♦♣♠•◆◇■□▲△▼▽※" * 3 + OK}, "special_chars"),
])
def test_reasons(row, reason):
    out = run([{"listing_id": "L1", "category": "phone", "quality_score": 0.9, "risk_flags": [], **row}])
    assert out["drop_reason"][0] == reason
    assert out["error"][0] is None


def test_first_filter_wins_and_pii_still_counted():
    out = run([{"listing_id": "L1", "category": "phone", "description": "call 13812345678", "quality_score": 0.1}])
    assert out["drop_reason"][0] == "low_quality"
    assert out["pii"][0] == ["phone"]


def test_unflagged_risk_values_pass_and_thresholds_apply():
    out = run([{"listing_id": "L1", "category": "phone", "description": OK, "quality_score": 0.45,
                "risk_flags": ["new_seller"]}], min_quality=0.4)
    assert out["drop_reason"][0] is None


def test_bad_row_is_quarantined_not_fatal():
    out = run([{"listing_id": "L1", "category": "phone", "description": OK, "quality_score": "high"},
               {"listing_id": "L2", "category": "phone", "description": OK, "quality_score": 0.9}])
    assert out["error"][0] and "ValueError" in out["error"][0]
    assert out["error"][1] is None and out["drop_reason"][1] is None
    assert np.asarray(out["minhash"][1]).shape == (32,)


def test_missing_column_names_it():
    with pytest.raises(MissingColumns, match=r"'description'"):
        TextFilters(CleanConfig())({"listing_id": ["L1"], "category": ["x"]})


def test_source_markers_do_not_count_as_special_characters():
    """Mercari writes [rm] where it removed a price; 5 real rows were dropped for it."""
    text = "Bundle pricing for [rm] tops: 1 - [rm] 2 - [rm] 3 - [rm] 4 - [rm] 5 - [rm]"
    assert run([{"description": text}])["drop_reason"][0] == "special_chars"
    assert run([{"description": text}], ignore_markers=["[rm]"])["drop_reason"][0] is None
    noisy = "★☆♥♦♣♠•◆◇■□▲△▼▽※" * 3 + OK + " [rm]"
    assert run([{"description": noisy}], ignore_markers=["[rm]"])["drop_reason"][0] == "special_chars"
