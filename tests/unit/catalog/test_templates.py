import pytest

from ipl.catalog.templates import TemplateConfig, TemplateStats, load_templates, mine_templates, write_templates


def meta(*keys):
    return {k: {"pos": i * 10} for i, k in enumerate(keys)}


def test_mining_orders_by_rank_and_filters_by_rate():
    s = TemplateStats()
    for _ in range(30):
        s.add("phone", meta("Brand", "Model", "Storage", "Color"))
    for _ in range(10):
        s.add("phone", meta("Brand", "Model", "Color", "Storage", "Version"))
    s.add("phone", meta("Brand", "Rare"))
    tpl = mine_templates(s, TemplateConfig(min_rate=0.3, min_listings=5))
    assert tpl["phone"]["template"] == ["Brand", "Model", "Storage", "Color"]
    assert tpl["phone"]["stats"]["Version"]["rate"] < 0.3


def test_merge_and_roundtrip(tmp_path):
    a, b = TemplateStats(), TemplateStats()
    for _ in range(12):
        a.add("watch", meta("Brand", "Model"))
        b.add("watch", meta("Brand", "Strap"))
    merged = TemplateStats.from_dict(a.to_dict()).merge(b)
    tpl = mine_templates(merged, TemplateConfig(min_listings=5))
    path = tmp_path / "templates.yaml"
    write_templates(path, tpl, "test")
    assert load_templates(path) == {"watch": tpl["watch"]["template"]}
    assert tpl["watch"]["template"][0] == "Brand"


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ipl prepare"):
        load_templates(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: {phone: {template: Brand}}")
    with pytest.raises(ValueError, match="categories.phone.template"):
        load_templates(bad)
