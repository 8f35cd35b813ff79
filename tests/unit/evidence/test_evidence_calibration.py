"""Calibration of evidence tiers: isotonic confidence, target-precision thresholds, disabled tiers."""
import numpy as np

from ipl.catalog.levels import KeyLevels
from ipl.evidence.calibrate import confidence, fit_tier, isotonic, passes
from ipl.evidence.fit import calibrate


def test_isotonic_confidence_never_falls_as_the_score_rises():
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    correct = rng.random(500) < scores  # P(correct | s) = s
    tier = fit_tier(scores, correct, 0.9, 20)
    curve = [c[1] for c in tier["curve"]]
    assert curve == sorted(curve)
    assert confidence(tier, 0.05) < 0.3 < 0.7 < confidence(tier, 0.97)
    assert [b[2] for b in isotonic(np.array([0.1, 0.1, 0.2]), np.array([1, 0, 1]))] == [2, 1]


def test_threshold_reaches_the_target_on_the_held_out_candidates():
    scores = np.linspace(0, 1, 200)
    correct = scores > 0.3  # perfectly separable above 0.3
    tier = fit_tier(scores, correct, 0.95, 20)
    assert tier["enabled"] and 0.29 < tier["threshold"] <= 0.31
    stated = scores >= tier["threshold"]
    assert correct[stated].mean() >= 0.95 and tier["precision"] == round(float(correct[stated].mean()), 4)
    assert passes(tier, 0.9) and not passes(tier, 0.1)


def test_a_tier_that_cannot_reach_its_target_is_disabled_with_the_reason():
    rng = np.random.default_rng(1)
    scores = rng.random(300)
    correct = rng.random(300) < 0.5  # a coin flip whatever the score
    tier = fit_tier(scores, correct, 0.95, 20, "top-1 hits")
    assert not tier["enabled"] and tier["threshold"] is None
    assert "no score reaches precision 0.95" in tier["reason"] and "300 held-out top-1 hits" in tier["reason"]
    assert not passes(tier, 1.0)  # nothing is ever stated through it: no max+epsilon threshold
    # too few candidates above a precise score: also disabled (min_support)
    few = fit_tier([0.9, 0.95, 0.1, 0.2], [True, True, False, False], 0.95, 20)
    assert not few["enabled"]
    empty = fit_tier([], [], 0.95, 1)
    assert not empty["enabled"] and "no held-out" in empty["reason"] and confidence(empty, 0.5) == 0.0


def _hit(lid, sku, score, **values):
    return {"listing_id": lid, "sku_id": sku, "category": "phone", "score": score, "values": values}


def test_calibrate_fits_every_tier_from_held_out_queries():
    """Queries whose top hit is the same SKU at high similarity, and others of similar products
    only: the identical tier calibrates, SKU-level values from similar listings never state."""
    queries = []
    for i in range(60):
        same = [_hit(f"a{i}{j}", "s1", 0.97 - 0.001 * j, Brand="Apple", Model="iPhone 12", Color="Blue")
                for j in range(3)]
        other = [_hit(f"b{i}{j}", "s2", 0.80 - 0.01 * j, Brand="Apple", Model="iPhone 12", Color="Red")
                 for j in range(3)]
        truth = {"Brand": "Apple", "Model": "iPhone 12", "Color": "Blue", "Condition": "used"}
        base = {"sku_id": "s1", "category": "phone", "truth": truth, "predicted": ("phone", 0.9)}
        queries.append({**base, "hits": same + other})
        queries.append({**base, "hits": other})  # the SKU removed: only a similar product (another colour)
    ev = calibrate(queries, KeyLevels(), 0.95, 20, k=8)
    tiers = ev["tiers"]
    assert tiers["identical"]["enabled"] and 0.80 < tiers["identical"]["threshold"] <= 0.97
    assert tiers["similar:product"]["enabled"]  # brand/model agree across the SPU
    assert not tiers["similar:sku"]["enabled"] and "policy" in tiers["similar:sku"]
    assert tiers["identical:sku"]["enabled"]
    assert ev["in_domain"]["min_similarity"] <= 0.80 and "similar:sku" not in ev["disabled"]
    # a category predictor that is right half the time cannot gate at 0.95: disabled, and no value tier fits
    for q in queries[::2]:
        q["predicted"] = ("laptop", 0.9)
    ev = calibrate(queries, KeyLevels(), 0.95, 20, k=8)
    assert "category" in ev["disabled"] and "similar:product" in ev["disabled"]


def test_each_key_gets_its_own_tier_when_the_held_out_queries_give_it_enough_candidates():
    """Brand always agrees with the truth; Model (same scores) is a look-alike's one time in 16:
    pooled, the level's tier (0.97) passes both, stating models at 0.94; per key, the model is
    measured short of the target and states nothing, the brand still does. A rare key (Storage, under
    ``key_min_candidates``) gets no tier of its own and is judged by its level's."""
    from ipl.evidence.assess import assess, tier_for

    queries = []
    for i in range(80):
        model = "iPhone 12" if i % 16 else "iPhone 13"  # a look-alike model agrees at the same score
        hits = [_hit(f"a{i}{j}", f"s{i}", 0.95 - 0.002 * j, Brand="Apple", Model=model, Color="Blue")
                for j in range(6)]
        truth = {"Brand": "Apple", "Model": "iPhone 12", "Color": "Blue"}
        if i < 10:
            truth["Storage"] = "64GB"
            for h in hits:
                h["values"]["Storage"] = "64GB"
        queries.append({"sku_id": "none", "category": "phone", "truth": truth, "predicted": ("phone", 0.9),
                        "hits": hits})
    pooled = calibrate(queries, KeyLevels(), 0.95, 20, k=8, key_min_candidates=0)
    assert pooled["tiers"]["similar:product"]["enabled"] and "similar:product:model" not in pooled["tiers"]
    out = {a["key"]: a for a in assess(["Brand", "Model"], KeyLevels(), queries[1]["hits"], pooled)}
    assert out["Model"]["status"] == "stated"  # at the pooled 155/160: the models alone are 75/80
    ev = calibrate(queries, KeyLevels(), 0.95, 20, k=8, key_min_candidates=50)
    tiers = ev["tiers"]
    assert tiers["similar:product"]["enabled"]  # the level's own tier is still fitted (and reported)
    assert tiers["similar:product:brand"]["enabled"] and tiers["similar:product:brand"]["key_tier"] == "similar:product"
    assert not tiers["similar:product:model"]["enabled"] and "similar:product:model" in ev["disabled"]
    assert "similar:sku:storage" not in tiers  # 10 candidates < 50: the level's tier judges it
    assert tier_for(tiers, "similar", "sku", "Storage") is tiers["similar:sku"]
    assert tier_for(tiers, "similar", "product", "BRAND") is tiers["similar:product:brand"]  # keys ignore case
    names = list(tiers)  # a key's tier comes right after its level's (the `ipl index` listing)
    assert names.index("similar:product:brand") == names.index("similar:product") + 1
    out = {a["key"]: a for a in assess(["Brand", "Model"], KeyLevels(), queries[1]["hits"], ev)}
    assert out["Brand"]["status"] == "stated" and out["Model"]["status"] == "to_confirm"


def test_product_values_can_need_a_stricter_target_than_the_rest():
    """Models right 96 % of the time (one look-alike in 25) and colours right every time: at the
    common 0.95 both are stated; with the product level's own 0.98 the models are asked and the
    colours are still stated (a wrong model is what a seller does not forgive)."""
    queries = []
    for i in range(100):
        model = "iPhone 13" if i % 25 == 0 else "iPhone 12"
        hits = [_hit(f"a{i}{j}", f"s{i}", 0.95 - 0.002 * j, Model=model, Color="Blue") for j in range(6)]
        queries.append({"sku_id": f"s{i}", "category": "phone", "predicted": ("phone", 0.9), "hits": hits,
                        "truth": {"Model": "iPhone 12", "Color": "Blue"}})
    common = calibrate(queries, KeyLevels(), 0.95, 20, k=8, key_min_candidates=0)
    assert common["tiers"]["identical:product"]["enabled"] and common["tiers"]["identical:sku"]["enabled"]
    strict = calibrate(queries, KeyLevels(), 0.95, 20, k=8, key_min_candidates=0, level_targets={"product": 0.98})
    assert strict["level_targets"] == {"product": 0.98}
    product, sku = strict["tiers"]["identical:product"], strict["tiers"]["identical:sku"]
    assert not product["enabled"] and product["target"] == 0.98 and "0.98" in product["reason"]
    assert sku["enabled"] and sku["target"] == 0.95
    assert strict["tiers"]["category"]["target"] == 0.95  # hit- and category-level tiers keep the common target


def test_score_search_finds_the_score_that_tells_near_copies_from_distant_agreement(monkeypatch):
    """Half the queries have one near copy stating the right model (the others far and silent);
    half have only distant listings that all agree on a wrong model. Weighted from the draft's own
    best similarity the distant agreement scores highest, so the default score states nothing at
    precision 0.95; the search finds a score measured from a fixed similarity, the tier is enabled
    with it, and serving's candidates are scored with the tier's setting."""
    from ipl.evidence.assess import key_candidates

    levels = KeyLevels()
    queries = []
    for i in range(120):
        sku = f"s{i}"
        if i % 2:
            hits = [_hit(f"n{i}", sku, 0.96 + 0.0002 * (i % 7), Model=f"M{i}")] + \
                   [_hit(f"f{i}{j}", f"o{i}{j}", 0.70 - 0.01 * j) for j in range(5)]
        else:
            hits = [_hit(f"f{i}{j}", f"o{i}{j}", 0.72 - 0.002 * j, Model="Wrong") for j in range(6)]
        queries.append({"sku_id": sku, "category": "phone", "truth": {"Model": f"M{i}"},
                        "predicted": ("phone", 0.99), "hits": hits})
    plain = calibrate(queries, levels, 0.95, 10, 8, key_min_candidates=0)
    found = calibrate(queries, levels, 0.95, 10, 8, key_min_candidates=0, score_search=True)
    assert not plain["tiers"]["similar:product"]["enabled"]
    tier = found["tiers"]["similar:product"]
    assert tier["enabled"] and tier["score"]["anchor"] is not None and tier["precision"] >= 0.95
    assert tier["search"]["chosen"]["recall"] > tier["search"]["default"]["recall"] == 0
    assert tier["search"]["chosen"]["precision"] >= 0.95 and found["score_search"] is True
    near, far = queries[1]["hits"], queries[0]["hits"]
    assert key_candidates(near, "Model", "product", found)[0]["passes"]
    assert not key_candidates(far, "Model", "product", found)[0]["passes"]
    assert not key_candidates(near, "Model", "product", plain)[0]["passes"]
    # past SEARCH_MAX_QUERIES the search reads whole SKUs' queries of every n-th SKU: the same choice
    import ipl.evidence.fit as fit

    monkeypatch.setattr(fit, "SEARCH_MAX_QUERIES", 60)
    sampled = calibrate(queries, levels, 0.95, 10, 8, key_min_candidates=0, score_search=True)
    assert sampled["tiers"]["similar:product"]["score"]["anchor"] is not None
    assert sampled["tiers"]["similar:product"]["enabled"]


def test_product_head_predictions_get_photo_product_tiers_where_the_nearest_hit_agrees():
    """Queries carrying a product head's predictions (``photo``: key -> top values). The head is
    sure of the right model three times in four and as sure of a wrong one otherwise; the nearest
    hit gives the right model each time, so the wrong ones are no candidates (as in serving) and
    photo:product and the model's own tier calibrate."""
    queries = []
    for i in range(80):
        right = i % 4 != 0
        hits = [_hit(f"b{i}{j}", f"s{j}", 0.80 - 0.01 * j, Brand="Apple", Model=f"iPhone {12 - j}") for j in range(3)]
        truth = {"Brand": "Apple", "Model": "iPhone 12"}
        photo = {"Model": [{"value": "iPhone 12" if right else "iPhone 11", "score": 0.97}]}
        queries.append({"sku_id": f"q{i}", "category": "phone", "truth": truth, "predicted": ("phone", 0.9),
                        "hits": hits, "photo": photo})
    ev = calibrate(queries, KeyLevels(), 0.95, 20, k=8, key_min_candidates=50)
    for name in ("photo:product", "photo:product:model"):
        tier = ev["tiers"][name]
        assert tier["enabled"] and tier["n"] == 60 and tier["precision"] == 1.0, name
    assert "photo:sku" not in ev["tiers"]  # no SKU-level photo classifier in these queries
    for q in queries:  # the nearest hit gives iPhone 11: only the head's wrong values count, and they are wrong
        q["hits"] = q["hits"][1:]
    tier = calibrate(queries, KeyLevels(), 0.95, 20, k=8)["tiers"]["photo:product"]
    assert tier["n"] == 20 and tier["positives"] == 0 and not tier["enabled"]
