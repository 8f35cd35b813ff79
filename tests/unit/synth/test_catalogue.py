"""Catalogue: categories, ordered templates, SPU/SKU structure."""
import pytest

from ipl.synth.catalogue import Catalogue


def test_eight_categories_with_ordered_templates():
    cat = Catalogue.build()
    assert len(cat.categories) >= 8
    phone = cat.categories["phone"]
    assert phone.template == ("Brand", "Model", "Storage", "Color", "Version", "Screen condition")
    for c in cat.categories.values():
        assert c.template[:2] == ("Brand", "Model")
        assert "Color" in c.template and c.variant_key in c.template


def test_sku_and_spu_structure():
    cat = Catalogue.build(brands_per_category=2, models_per_brand=2, colors_per_spu=2, variants_per_spu=2)
    assert len(cat.spus) == 8 * 2 * 2
    assert len(cat.skus) == len(cat.spus) * 2 * 2
    assert len({s.sku_id for s in cat.skus}) == len(cat.skus)
    for sku in cat.skus:
        assert sku.sku_id.startswith(sku.spu_id + "/")
        assert sku.spu_id.startswith(sku.category + "/")
    # the same SPU comes in several colours; SKUs of an SPU share brand and model
    by_spu = {}
    for sku in cat.skus:
        by_spu.setdefault(sku.spu_id, set()).add((sku.brand, sku.model, sku.color))
    assert all(len({(b, m) for b, m, _ in v}) == 1 and len({c for _, _, c in v}) == 2 for v in by_spu.values())


def test_category_subset_and_unknown_category():
    cat = Catalogue.build(categories=["phone", "watch"])
    assert set(cat.categories) == {"phone", "watch"}
    with pytest.raises(ValueError, match="unknown"):
        Catalogue.build(categories=["boat"])


def test_chinese_surface_forms():
    cat = Catalogue.build()
    sku = next(s for s in cat.skus if s.category == "phone")
    attrs = cat.sku_attributes(sku)
    assert attrs["Color"].zh.endswith("色")
    assert cat.key_name("Brand", "zh") == "品牌"


def test_every_category_grades_its_condition_best_first():
    cat = Catalogue.build()
    grades = [g.en for g in cat.condition_grades]
    assert grades == ["like new", "good", "fair"]
    for name, c in cat.categories.items():
        assert c.condition_key in c.listing, name
        values = c.listing[c.condition_key]
        got = [cat.condition_of(name, {c.condition_key: v}).en for v in values]
        assert got[0] == "like new" and got[-1] == "fair" and got == sorted(got, key=grades.index), (name, got)
    phone = cat.categories["phone"]
    assert phone.condition_key == "Screen condition"
    assert cat.condition_of("phone", {"Version": phone.listing["Version"][0]}) is None
