"""Listing factory: determinism, ground-truth consistency, each dirty reason at its rate."""
import difflib
import json
import re
import unicodedata
from collections import Counter

import pytest

from ipl.synth.config import SynthConfig
from ipl.synth.dirty import REASONS
from ipl.synth.generate import SCHEMA, ListingFactory


def norm(s):
    return re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", s).lower())


def test_deterministic_per_seed_and_independent_of_batching(small_synth_cfg):
    a = ListingFactory(small_synth_cfg).table(0, 30).to_pylist()
    b = ListingFactory(small_synth_cfg).table(10, 30).to_pylist()
    assert a[10:] == b  # row i depends only on (seed, i), photos included
    c = ListingFactory(small_synth_cfg.model_copy(update={"seed": 1})).table(0, 30).to_pylist()
    assert [r["description"] for r in a] != [r["description"] for r in c]


def test_schema_and_ground_truth(small_rows, small_synth_cfg):
    factory = ListingFactory(small_synth_cfg)
    assert set(small_rows[0]) == set(SCHEMA.names)
    for r in small_rows:
        cat = factory.catalogue.categories[r["category"]]
        attrs = json.loads(r["attributes"])
        assert tuple(attrs) == cat.template
        grade = factory.catalogue.condition_of(r["category"], {cat.condition_key: next(
            v for v in cat.listing[cat.condition_key] if v.text(r["language"]) == attrs[cat.condition_key])})
        assert r["condition"] == grade.text(r["language"])  # the grade of the listing's condition value
        assert r["sku_id"].startswith(r["spu_id"] + "/") and r["spu_id"].startswith(r["category"] + "/")
        assert 1 <= len(r["photos"]) <= small_synth_cfg.photos_max
        assert all(p[:2] == b"\xff\xd8" for p in r["photos"])  # JPEG
        if r["dirty_reason"] is None:
            text = norm(r["description"])
            for key in json.loads(r["mentioned"]):
                assert norm(attrs[key]) in text, (key, attrs[key], r["description"])
            assert r["photo_sku_id"] == r["sku_id"]
            assert r["risk_flags"] == [] and r["quality_score"] >= 0.55


def test_template_order_is_a_signal(small_rows):
    """Sellers mention early template keys earlier on average (what template mining uses)."""
    positions = {}
    for r in small_rows:
        if r["category"] != "phone" or r["dirty_reason"]:
            continue
        for pos, key in enumerate(json.loads(r["mentioned"])):
            positions.setdefault(key, []).append(pos)
    mean = {k: sum(v) / len(v) for k, v in positions.items()}
    assert mean["Storage"] < mean["Screen condition"]


@pytest.fixture(scope="module")
def dirty_rows():
    rate = 0.05
    cfg = SynthConfig(rows=2400, photos_max=1, image_size=48, dirty={r: rate for r in REASONS}, models={"build": False})
    factory = ListingFactory(cfg)
    return rate, factory.table(0, 2400).to_pylist(), factory


def test_each_dirty_reason_at_its_rate(dirty_rows):
    rate, rows, _ = dirty_rows
    counts = Counter(r["dirty_reason"] for r in rows)
    n = len(rows)
    sigma = (n * rate * (1 - rate)) ** 0.5
    for reason in REASONS:
        assert abs(counts[reason] - n * rate) < 4.5 * sigma, (reason, counts[reason])
    assert abs(counts[None] - n * (1 - rate * len(REASONS))) < 4.5 * (n * 0.35 * 0.65) ** 0.5


def test_dirty_rows_carry_their_defect(dirty_rows):
    _, rows, factory = dirty_rows
    by_reason = {}
    for r in rows:
        by_reason.setdefault(r["dirty_reason"], []).append(r)
    for r in by_reason["privacy_phone"]:
        assert re.search(r"(\d[\s\-()]*){10,}", unicodedata.normalize("NFKC", r["description"]))
    for r in by_reason["privacy_email"]:
        assert re.search(r"\S+@\S+\.\w+", r["description"])
    for r in by_reason["privacy_url"]:
        assert re.search(r"https?://|www\.", r["description"])
    for r in by_reason["privacy_wechat"]:
        assert re.search(r"wechat|vx|wx|v:|微|薇", r["description"], re.I)
    for r in by_reason["too_short"]:
        assert len(r["description"]) < 20
    for r in by_reason["too_long"]:
        assert len(r["description"]) > 1000
    for r in by_reason["special_chars"]:
        specials = sum(1 for ch in r["description"] if not ch.isalnum() and not ch.isspace())
        assert specials / len(r["description"]) > 0.25
    for reason, flag in (("risk_traffic", "traffic"), ("risk_low_price", "low_price"), ("risk_fraud", "fraud")):
        assert all(r["risk_flags"] == [flag] for r in by_reason[reason])
    clean_prices = sorted(r["price"] for r in by_reason[None])
    assert max(r["price"] for r in by_reason["risk_low_price"]) < clean_prices[len(clean_prices) // 2]
    assert all(r["quality_score"] < 0.4 for r in by_reason["low_quality"])
    for r in by_reason["image_text_mismatch"]:
        assert r["photo_sku_id"].split("/")[0] != r["category"]
    for r in by_reason["near_duplicate"]:
        # a near copy of an earlier clean listing's text
        i = int(r["listing_id"][1:])
        j = factory._original_of(i)
        assert j is not None and j < i and rows[j]["dirty_reason"] is None
        ratio = difflib.SequenceMatcher(None, r["description"], rows[j]["description"]).ratio()
        assert 0.9 < ratio < 1.0, (r["description"], rows[j]["description"])


def test_chinese_listings():
    cfg = SynthConfig(rows=50, language="zh", photos_max=1, image_size=48, models={"build": False})
    rows = ListingFactory(cfg).table(0, 50).to_pylist()
    clean = [r for r in rows if r["dirty_reason"] is None]
    assert clean
    for r in clean:
        assert re.search(r"[\u4e00-\u9fff]", r["description"])
        attrs = json.loads(r["attributes"])
        assert re.search(r"[\u4e00-\u9fff]", attrs["Color"])
        assert r["language"] == "zh"
