"""What captions add to the other evidence (the index's ``caption_gain``) and when serving skips them."""
from ipl.catalog.levels import KeyLevels
from ipl.index.captions import caption_gain, stated_without_caption
from ipl.serve.pipeline import caption_skip

ON = {"enabled": True, "threshold": 0.6, "curve": [[0.0, 0.2], [0.6, 0.97]]}
OFF = {"enabled": False, "reason": "short of the target", "curve": [[0.0, 0.2]]}


def test_gain_counts_only_kept_passing_values_of_keys_no_other_basis_stated():
    values = [
        {"key": "Color", "level": "sku", "share": 1.0, "right": True, "keep": True, "covered": True},    # photo had it
        {"key": "Storage", "level": "sku", "share": 1.0, "right": True, "keep": True, "covered": False},  # new, right
        {"key": "Storage", "level": "sku", "share": 1.0, "right": False, "keep": True, "covered": False},  # new, wrong
        {"key": "Storage", "level": "sku", "share": 0.3, "right": True, "keep": True, "covered": False},  # under tier
        {"key": "Storage", "level": "sku", "share": 1.0, "right": True, "keep": False, "covered": False},  # not kept
        {"key": "Brand", "level": "product", "share": 1.0, "right": True, "keep": True, "covered": False},  # tier off
    ]
    gain = caption_gain(values, {"caption:sku": ON, "caption:product": OFF}, queries=40)
    assert gain == {"queries": 40, "values": 2, "right": 1, "precision": 0.5, "share": 0.025}
    # a key's own caption tier decides over its level's
    gain = caption_gain(values, {"caption:sku": ON, "caption:sku:storage": OFF, "caption:product": OFF}, 40)
    assert gain["values"] == 0 and gain["share"] == 0.0 and gain["precision"] is None


def test_the_other_evidence_is_what_serving_would_state_without_a_caption():
    hits = [{"listing_id": str(i), "score": 0.9, "category": "phone", "values": {"Brand": "Apple", "Color": "Red"}}
            for i in range(5)]
    evidence = {"tau": 0.05, "alpha": 1.0, "tiers": {"similar:product": ON, "identical": OFF}}
    photo = {"Color": [{"value": "Red", "score": 0.99}]}
    assert stated_without_caption(hits, ["Brand", "Color"], "phone", KeyLevels(), evidence, None, 8) == {"Brand"}
    with_photo = {**evidence, "tiers": {**evidence["tiers"], "photo:sku": ON}}
    assert stated_without_caption(hits, ["Brand", "Color"], "phone", KeyLevels(), with_photo, photo, 8) == \
        {"Brand", "Color"}
    assert stated_without_caption(hits, ["Brand"], "laptop", KeyLevels(), evidence, None, 8) == set()  # other category
    assert stated_without_caption(hits, ["Brand"], "phone", KeyLevels(), None, None, 8) == set()  # no calibration


def test_serving_skips_captions_without_a_tier_or_without_measured_gain():
    assert caption_skip({"caption:sku": OFF}, None, 0.01).startswith("no caption tier")
    assert caption_skip({"caption:sku": ON}, None, 0.01) is None  # an index from before the gain: caption
    assert caption_skip({"caption:sku": ON}, {"share": 0.2}, 0.01) is None
    why = caption_skip({"caption:sku": ON}, {"share": 0.004}, 0.01)
    assert "0.4%" in why and "caption.min_gain 0.01" in why
    assert caption_skip({"caption:sku": ON}, {"share": 0.0}, 0.0) is None  # min_gain 0: whenever a tier is on
