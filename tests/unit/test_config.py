"""Config loading: YAML + overrides, and errors that name the key and the file."""
from pathlib import Path

import pytest

from ipl.cli import STAGES, default_config_path, stage_config
from ipl.config import ConfigError, load_config, parse_overrides
from ipl.synth.config import SynthConfig


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_and_nested_overrides(tmp_path):
    p = write(tmp_path, "rows: 10\ncatalogue: {models_per_brand: 2}\n")
    cfg = load_config(SynthConfig, p, ["dirty.too_short=0.1", "catalogue.categories=[phone,watch]", "run.name=x"])
    assert cfg.rows == 10
    assert cfg.catalogue.models_per_brand == 2
    assert cfg.catalogue.categories == ["phone", "watch"]
    assert cfg.dirty.too_short == 0.1
    assert cfg.run.dir == Path("runs/x")


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "rows: 10\ncatalogue: {model_per_brand: 2}\n")
    with pytest.raises(ConfigError) as err:
        load_config(SynthConfig, p)
    assert "catalogue.model_per_brand: unknown key" in str(err.value)
    assert str(p) in str(err.value)


def test_wrong_type_names_field_and_value(tmp_path):
    p = write(tmp_path, "rows: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(SynthConfig, p)
    assert "rows:" in str(err.value) and "'many'" in str(err.value) and str(p) in str(err.value)


def test_wrong_type_from_override_names_the_override(tmp_path):
    p = write(tmp_path, "rows: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(SynthConfig, p, ["language=fr"])
    assert "language" in str(err.value) and "language=fr" in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: /no/such.yaml"):
        load_config(SynthConfig, "/no/such.yaml")


def test_bad_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SynthConfig, write(tmp_path, "rows: [1,\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(SynthConfig, write(tmp_path, "- 1\n- 2\n", "list.yaml"))


@pytest.mark.parametrize("bad", ["rows", "=3", "a..b=1"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


def test_override_value_and_section_conflict():
    with pytest.raises(ConfigError, match="both as a value and as a section"):
        parse_overrides(["dirty=1", "dirty.too_short=0.1"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="photos_max"):
        load_config(SynthConfig, None, ["photos_min=3", "photos_max=2"])
    with pytest.raises(ConfigError, match="add up to"):
        load_config(SynthConfig, None, [f"dirty.{r}=0.1" for r in ("too_short", "too_long", "low_quality",
                                                                   "risk_fraud", "risk_traffic", "privacy_url",
                                                                   "privacy_email", "privacy_phone", "special_chars",
                                                                   "near_duplicate")])


def test_every_field_has_a_description():
    from pydantic import BaseModel

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    for st in STAGES.values():
        if st.config:
            from ipl.cli import _resolve

            walk(_resolve(st.config))


@pytest.mark.parametrize("stage", [s.name for s in STAGES.values() if s.config])
def test_shipped_local_configs_load(stage):
    assert default_config_path(stage).is_file()
    stage_config(stage, None, [])
