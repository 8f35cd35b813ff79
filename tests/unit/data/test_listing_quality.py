"""The listing quality score (Appendix C.2): validated operator weights, each feature, the
weighted mean over the features a listing carries."""
import io

import pytest
from PIL import Image

from ipl.config import ConfigError, validate
from ipl.data.listing_quality import FEATURES, QualityConfig, fluency, listing_features, quality_score

TEMPLATE = ["Brand", "Model", "Color", "Condition"]


def jpeg(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 90, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def test_weights_name_known_features_only():
    assert set(QualityConfig().weights) == set(FEATURES) and len(FEATURES) == 11
    with pytest.raises(ConfigError, match=r"unknown features \['colour_pop'\]"):
        validate(QualityConfig, {"weights": {"colour_pop": 1.0}}, "quality")
    with pytest.raises(ConfigError, match="negative"):
        validate(QualityConfig, {"weights": {"price_present": -1}}, "quality")
    with pytest.raises(ConfigError, match="at least one weight"):
        validate(QualityConfig, {"weights": {"price_present": 0}}, "quality")


def test_features_of_a_good_and_a_poor_listing():
    cfg = QualityConfig(target_words=10, target_photos=2, min_photo_side=400)
    good = {"category": "phone", "title": "Huawei P30 blue", "price": 120.0, "clip_score": 0.31,
            "description": "Selling my Huawei P30 in blue, 64GB, screen has no scratches, works perfectly, "
                           "comes with the box and charger.",
            "photos": [jpeg(800, 600), jpeg(400, 300)],
            "extracted": {"Brand": "Huawei", "Model": "P30", "Color": "Blue", "Condition": "like new"}}
    f = listing_features(good, TEMPLATE, cfg)
    assert f["category_present"] == 1 and f["category_consistent"] == 1 and f["attribute_fill_rate"] == 1
    assert f["description_length"] == 1 and f["description_fluency"] == 1 and f["photo_count"] == 1
    assert f["photo_resolution"] == pytest.approx((1 + 300 / 400) / 2) and f["price_present"] == 1
    assert f["title_present"] == 1 and f["condition_stated"] == 1 and f["contact_free"] == 1
    poor = {"category": "", "title": "phone", "price": 0.0, "description": "call call call 13812345678",
            "photos": [], "extracted": {"Brand": "Huawei"}}
    p = listing_features(poor, TEMPLATE, cfg)
    assert p["category_present"] == 0 and p["attribute_fill_rate"] == 0.25 and p["photo_count"] == 0
    assert p["price_present"] == 0 and p["title_present"] == 0 and p["contact_free"] == 0
    assert p["category_consistent"] is None  # no image-text check: not counted
    assert quality_score(f, cfg.weights) > 0.95 > 0.5 > quality_score(p, cfg.weights)


def test_missing_features_are_left_out_not_counted_as_zero():
    w = {"price_present": 1.0, "photo_count": 1.0, "description_length": 2.0}
    assert quality_score({"price_present": 1.0, "photo_count": None, "description_length": 0.5}, w) == \
        pytest.approx((1 + 2 * 0.5) / 3, abs=1e-4)
    assert quality_score({"price_present": 1.0, "description_length": 0.5}, w, only={"description_length"}) == 0.5
    assert quality_score({}, w) is None


def test_fluency_penalises_repetition():
    assert fluency("a b") == 0.0
    assert fluency("great great great great great great great great") < 0.3
    assert fluency("clean screen, new battery, original box included") == 1.0
