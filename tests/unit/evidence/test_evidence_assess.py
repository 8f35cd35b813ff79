"""The evidence model on hand-made cases: what is stated, what is asked, what is never taken."""
from ipl.catalog.levels import KeyLevels
from ipl.evidence.assess import assess, facts_of, scored_values, unknown_of

TIER = {"enabled": True, "threshold": 0.6, "curve": [[0.0, 0.1], [0.6, 0.96], [0.8, 0.99]]}
OFF = {"enabled": False, "reason": "no score reaches precision 0.95", "curve": [[0.0, 0.2], [0.7, 0.5]]}
CAL = {"tau": 0.05, "alpha": 1.0, "tiers": {"identical:product": TIER, "identical:sku": TIER,
                                            "similar:product": TIER, "similar:sku": {**TIER, "enabled": False}}}
KEYS = ["Brand", "Model", "Color", "Condition"]


def hit(lid, score, identical=False, **values):
    return {"listing_id": lid, "score": score, "identical": identical, "values": values}


def test_agreement_score_counts_listings_near_the_top_with_a_pseudo_count():
    one = scored_values([hit("a", 0.9, Brand="Apple")], "Brand")
    assert one[0]["raw"] == 0.5  # one listing alone: 1 / (1 + alpha)
    many = scored_values([hit(str(i), 0.9, Brand="Apple") for i in range(5)], "Brand")
    assert many[0]["raw"] > 0.8 and many[0]["sources"] == ["0", "1", "2", "3", "4"]
    split = scored_values([hit("a", 0.9, Brand="Apple"), hit("b", 0.9, Brand="Samsung")], "Brand")
    assert split[0]["raw"] < 0.5
    far = scored_values([hit("a", 0.9, Brand="Apple"), hit("b", 0.5, Brand="Samsung")], "Brand")
    assert far[0]["value"] == "Apple" and far[1]["raw"] < 0.01  # listings far below the top count little


def test_agreeing_similar_listings_state_the_brand_but_never_another_skus_colour():
    hits = [hit(str(i), 0.9, Brand="Apple", Model="iPhone 12", Color="Red") for i in range(4)]
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, CAL)}
    assert out["Brand"]["status"] == "stated" and out["Brand"]["basis"] == "similar"
    assert out["Brand"]["confidence"] >= 0.95 and out["Brand"]["sources"] == ["0", "1", "2", "3"]
    assert out["Color"]["status"] == "to_confirm" and out["Color"]["value"] is None
    assert out["Color"]["candidates"][0]["value"] == "Red"  # offered, not stated
    assert out["Condition"]["status"] == "to_confirm" and out["Condition"]["candidates"] == []  # never from refs


def test_identical_listings_state_sku_level_values():
    hits = [hit(str(i), 0.99, identical=True, Brand="Apple", Color="Blue") for i in range(3)]
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, CAL)}
    assert out["Color"]["status"] == "stated" and out["Color"]["basis"] == "identical"


def test_disagreement_abstains_and_lists_candidates_with_confidence():
    hits = [hit("a", 0.9, Brand="Apple"), hit("b", 0.9, Brand="Samsung"), hit("c", 0.89, Brand="Sony")]
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, CAL)}
    b = out["Brand"]
    assert b["status"] == "to_confirm" and b["value"] is None
    assert [c["value"] for c in b["candidates"]][:2] == ["Apple", "Samsung"]
    assert all(0 <= c["confidence"] < 0.95 for c in b["candidates"])
    assert facts_of(out.values()) == {} and unknown_of(out.values()) == KEYS


def test_a_disabled_tier_states_nothing_and_abstain_off_states_the_best_candidate():
    cal = {**CAL, "tiers": {**CAL["tiers"], "similar:product": OFF}}
    hits = [hit(str(i), 0.9, Brand="Apple") for i in range(6)]
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal)}
    assert out["Brand"]["status"] == "to_confirm"
    unguarded = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, abstain=False)}
    assert unguarded["Brand"]["status"] == "stated" and unguarded["Brand"]["value"] == "Apple"
    assert unguarded["Condition"]["status"] == "to_confirm"  # listing level stays the seller's even then


def test_out_of_domain_photos_state_no_product_value_and_confirmed_values_are_facts():
    hits = [hit(str(i), 0.9, Brand="Apple", Model="iPhone 12") for i in range(6)]
    ood = assess(KEYS, KeyLevels(), hits, CAL, in_domain=False)
    assert all(a["status"] == "to_confirm" and not a["candidates"] for a in ood)
    out = assess(KEYS, KeyLevels(), hits, CAL, confirmed={"Brand": "Huawei", "Condition": "like new"})
    by = {a["key"]: a for a in out}
    assert by["Brand"] == {**by["Brand"], "value": "Huawei", "status": "confirmed", "confidence": 1.0,
                           "basis": "seller"}
    # the references' model implies Apple, which the seller just denied: the model goes to the seller too
    assert facts_of(out) == {"Brand": "Huawei", "Condition": "like new"}
    assert by["Model"]["candidates"][0]["implies"] == {"key": "Brand", "value": "Apple"}


def test_a_calibrated_photo_classifier_states_the_colour():
    cal = {**CAL, "tiers": {**CAL["tiers"], "photo:sku": {"enabled": True, "threshold": 0.8,
                                                           "curve": [[0.0, 0.3], [0.8, 0.97]]}}}
    hits = [hit("a", 0.9, Brand="Apple", Color="Red")]
    sure = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, photo={"Color": [
        {"value": "Blue", "score": 0.9}, {"value": "Red", "score": 0.05}]})}
    assert sure["Color"]["status"] == "stated" and sure["Color"]["value"] == "Blue"
    assert sure["Color"]["basis"] == "photo" and sure["Color"]["sources"] == []
    unsure = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, photo={"Color": [
        {"value": "Blue", "score": 0.5}]})}
    assert unsure["Color"]["status"] == "to_confirm"
    assert {c["value"] for c in unsure["Color"]["candidates"]} == {"Blue", "Red"}


def test_a_kept_captions_value_is_stated_only_through_its_calibrated_tier():
    """Basis caption: the share of judges that kept the caption is the raw score; a value is stated
    when the caption:<level> tier is enabled and the share reaches its threshold, else offered."""
    cal = {**CAL, "tiers": {**CAL["tiers"], "caption:product": {"enabled": True, "threshold": 0.66,
                                                                "curve": [[0.0, 0.4], [0.66, 0.97]]},
                            "caption:sku": {"enabled": False, "reason": "too few", "curve": [[0.0, 0.5]]}}}
    hits = [hit("a", 0.9, Color="Red")]  # nothing says the brand; one listing says a colour
    caption = {"Brand": {"value": "Sony", "score": 1.0}, "Color": {"value": "Black", "score": 1.0}}
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, caption=caption)}
    assert out["Brand"]["status"] == "stated" and out["Brand"]["value"] == "Sony" and out["Brand"]["basis"] == "caption"
    assert out["Color"]["status"] == "to_confirm"  # caption:sku is disabled: offered, never stated
    assert {c["value"] for c in out["Color"]["candidates"]} == {"Black", "Red"}
    weak = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, caption={"Brand": {"value": "Sony",
                                                                                          "score": 1 / 3}})}
    assert weak["Brand"]["status"] == "to_confirm" and weak["Brand"]["candidates"][0]["basis"] == "caption"
    far = {a["key"]: a for a in assess(KEYS, KeyLevels(), hits, cal, in_domain=False, caption=caption)}
    assert far["Brand"]["status"] == "to_confirm" and not far["Brand"]["candidates"]  # out of domain: nothing


def test_the_seller_s_own_words_may_be_restated():
    """The item's condition is left out of a draft unless the seller gave it: a known value the
    seller's notes state counts as given."""
    from ipl.evidence.assess import seller_told
    from ipl.extract.matcher import AttributeMatcher

    m = AttributeMatcher()
    vocab = {"Battery": ["battery health 80%", "battery health 95%"], "Condition": ["like new", "for parts"],
             "Brand": ["Apple"]}
    assert seller_told(None, vocab, m) == set() and seller_told("", vocab, m) == set()
    assert seller_told("Battery Health 80 %, comes with a case", vocab, m) == {"Battery"}
    assert seller_told("like new, from my Apple store", vocab, m) == {"Condition", "Brand"}
    assert seller_told("works, small scratch", vocab, m) == set()


def test_a_calibrated_product_head_states_the_model_the_nearest_listing_confirms():
    """Basis photo at product level (the product heads): the head's probability through its own
    tier (photo:product:model), counted only when the nearest retrieved listing stating the model
    gives the same value (a closed-set head names a known model even for one it never saw)."""
    head_tier = {"enabled": True, "threshold": 0.9, "curve": [[0.0, 0.3], [0.9, 0.97]]}
    cal = {**CAL, "tiers": {**CAL["tiers"], "photo:product:model": head_tier}}
    weak = [hit("a", 0.91, Brand="Apple", Model="iPhone 12"), hit("b", 0.9, Brand="Apple", Model="iPhone 11")]
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), weak, cal, photo={"Model": [
        {"value": "iPhone 12", "score": 0.95}, {"value": "iPhone 11", "score": 0.03}]})}
    assert out["Model"]["status"] == "stated" and out["Model"]["value"] == "iPhone 12"
    assert out["Model"]["basis"] == "photo" and out["Model"]["confidence"] == 0.97
    unsure = {a["key"]: a for a in assess(KEYS, KeyLevels(), weak, cal, photo={"Model": [
        {"value": "iPhone 12", "score": 0.6}]})}
    assert unsure["Model"]["status"] == "to_confirm"
    other = {a["key"]: a for a in assess(KEYS, KeyLevels(), weak, cal, photo={"Model": [
        {"value": "iPhone 11", "score": 0.99}]})}  # the nearest listing says iPhone 12: the head's value is not evidence
    assert other["Model"]["status"] == "to_confirm"
    assert all(c["basis"] != "photo" for c in other["Model"]["candidates"])


def test_two_calibrated_bases_that_disagree_leave_the_key_to_the_seller():
    caption_tier = {"enabled": True, "threshold": 0.66, "curve": [[0.0, 0.4], [0.66, 0.97]]}
    cal = {**CAL, "tiers": {**CAL["tiers"], "caption:product": caption_tier}}
    agreeing = [hit(str(i), 0.9, Brand="Apple", Model="iPhone 11") for i in range(6)]  # similar tier passes
    rivals = {a["key"]: a for a in assess(KEYS, KeyLevels(), agreeing, cal, caption={"Model": {
        "value": "iPhone 12", "score": 1.0}})}
    assert rivals["Model"]["status"] == "to_confirm" and rivals["Model"]["value"] is None
    assert {c["value"] for c in rivals["Model"]["candidates"]} == {"iPhone 11", "iPhone 12"}
    assert rivals["Brand"]["status"] == "stated"  # the other keys are not affected
    both = {a["key"]: a for a in assess(KEYS, KeyLevels(), agreeing, cal, caption={"Model": {
        "value": "iPhone 11", "score": 1.0}})}
    assert both["Model"]["status"] == "stated" and both["Model"]["value"] == "iPhone 11"
    unguarded = {a["key"]: a for a in assess(KEYS, KeyLevels(), agreeing, cal, abstain=False, caption={"Model": {
        "value": "iPhone 12", "score": 1.0}})}
    assert unguarded["Model"]["status"] == "stated"  # the unguarded rows still state the best candidate


def test_a_model_is_stated_only_with_the_brand_its_listings_agree_on():
    """A model implies its brand: stating "A7 III" under a Nikon photo says "Sony". So a model
    value is stated only when the brand its listings give is stated (or confirmed) too; the
    brand is never held back by the model (brands span many models)."""
    head_tier = {"enabled": True, "threshold": 0.9, "curve": [[0.0, 0.3], [0.9, 0.97]]}
    cal = {**CAL, "tiers": {**CAL["tiers"], "photo:product:model": head_tier}}
    split_brand = [hit("a", 0.91, Brand="Sony", Model="A7 III"), hit("b", 0.9, Brand="Nikon", Model="D750"),
                   hit("c", 0.9, Brand="Canon", Model="EOS R")]  # the brand evidence is split: not stated
    photo = {"Model": [{"value": "A7 III", "score": 0.99}]}
    out = {a["key"]: a for a in assess(KEYS, KeyLevels(), split_brand, cal, photo=photo)}
    assert out["Brand"]["status"] == "to_confirm"
    m = out["Model"]
    assert m["status"] == "to_confirm" and m["value"] is None
    assert m["candidates"][0]["value"] == "A7 III" and m["candidates"][0]["implies"] == {"key": "Brand",
                                                                                        "value": "Sony"}
    assert len(m["candidates"]) <= 3
    # the seller confirms the brand the model implies: the model is stated
    told = {a["key"]: a for a in assess(KEYS, KeyLevels(), split_brand, cal, photo=photo,
                                        confirmed={"Brand": "sony"})}
    assert told["Model"]["status"] == "stated" and told["Model"]["value"] == "A7 III"
    # ... another brand: not
    other = {a["key"]: a for a in assess(KEYS, KeyLevels(), split_brand, cal, photo=photo,
                                         confirmed={"Brand": "Nikon"})}
    assert other["Model"]["status"] == "to_confirm"
    # the brand stated by its own evidence and the model's listings agree: both stated
    agreeing = [hit("0", 0.91, Brand="Sony", Model="A7 III")] + [
        hit(str(i), 0.9, Brand="Sony", Model=m) for i, m in enumerate(["A7 IV", "RX100", "ZV-1", "A6400", "FX3"], 1)]
    both = {a["key"]: a for a in assess(KEYS, KeyLevels(), agreeing, cal, photo=photo)}
    assert both["Brand"]["value"] == "Sony" and both["Model"]["status"] == "stated"
    # a brand whose listings all show one model is still stated without it (the rule runs narrow -> broad)
    one_model = [hit(str(i), 0.9, Brand="Sony", Model="A7 III") for i in range(6)]
    alone = {a["key"]: a for a in assess(KEYS, KeyLevels(), one_model, {**CAL, "tiers": {
        **CAL["tiers"], "similar:product:model": {**TIER, "enabled": False}}})}
    assert alone["Brand"]["status"] == "stated" and alone["Model"]["status"] == "to_confirm"
    # listings that disagree on the model's brand tie it to none: the model's own evidence decides
    mixed = [hit("a", 0.91, Brand="Sony", Model="A7 III"), hit("b", 0.9, Brand="Nikon", Model="A7 III"),
             hit("c", 0.9, Brand="Canon", Model="EOS R")]
    free = {a["key"]: a for a in assess(KEYS, KeyLevels(), mixed, cal, photo=photo)}
    assert free["Model"]["status"] == "stated"
    # the unguarded rows state every best candidate as before
    unguarded = {a["key"]: a for a in assess(KEYS, KeyLevels(), split_brand, cal, photo=photo, abstain=False)}
    assert unguarded["Model"]["status"] == "stated"


def test_key_levels_order_product_keys_broadest_first():
    levels = KeyLevels()
    assert levels.broader("Model") == ["brand"] and levels.broader("brand") == []
    assert levels.broader("Color") == [] and levels.broader("型号") == ["brand", "model", "品牌"]
