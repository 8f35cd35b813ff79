"""Configuration: strict pydantic models loaded from YAML plus ``key=value`` overrides.

Every job and Serve app has one model (a subclass of :class:`Strict`), loaded once at the
entrypoint with :func:`load_config` and passed whole. Unknown keys, wrong types and
missing files are :class:`ConfigError` naming the offending key and the file::

    cfg = load_config(SynthConfig, "jobs/configs/synth_local.yaml", ["rows=500", "dirty.too_short=0.1"])

Overrides use dotted keys for nesting; values are parsed as YAML scalars/flow values
(``rows=10``, ``flag=true``, ``tags=[a,b]``, ``name=null``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

T = TypeVar("T", bound=BaseModel)

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key and file."""


def refuse_keys(data, gone: dict[str, str]):
    """For a ``mode="before"`` validator: a key of ``gone`` (a setting that moved or was removed)
    present in ``data`` is an error saying what to do instead; ``data`` otherwise."""
    if isinstance(data, dict):
        for key, message in gone.items():
            if key in data:
                raise ValueError(message)
    return data


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ImagePolicy(Strict):
    """How photos reach the VLM, the same in training, serving, captioning and evaluation.

    Each photo is resized (aspect kept) to a multiple of 28 px on both sides with between
    ``min_pixels`` and ``max_pixels`` pixels (Qwen2-VL's own ``smart_resize`` rule, and the
    processor's ``min_pixels``/``max_pixels`` are set to the same bounds), at most ``max_photos``
    photos per row. ``ipl train`` writes the policy it trained with into the exported model
    directory (``ipl_images.json`` + the processor config): serving, captioning and evaluation
    read it from there, so the served model sees what it was trained on. A row whose text plus
    photos would exceed the context loses photos from the end until it fits (and is dropped,
    counted, only when it does not fit even without photos): :func:`ipl.photos.photos_that_fit`."""

    min_pixels: int = Field(56 * 56, ge=28 * 28, description="Fewest pixels per photo (smaller ones are upscaled).")
    max_pixels: int = Field(448 * 448, ge=28 * 28, description="Most pixels per photo (larger ones are downscaled): "
                            "visual tokens per photo = pixels / 784.")
    max_photos: int = Field(2, ge=0, le=9, description="Photos per row given to the VLM (the first N).")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"images.min_pixels ({self.min_pixels}) is above images.max_pixels ({self.max_pixels})")
        return self


class RunConfig(Strict):
    """Where a run's artifacts live: ``<root>/<name>/``."""

    name: str = Field("demo", description="Run name; artifacts go to <root>/<name>/.")
    root: str = Field("runs", description="Directory holding all runs (relative to the working directory).")

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


class RayConfig(Strict):
    """How to reach Ray: an existing cluster (address or RAY_ADDRESS) or a local embedded one."""

    address: Optional[str] = Field(
        None, description="Ray address ('auto', 'ray://host:10001'); null uses RAY_ADDRESS or starts a local Ray."
    )
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of a locally started Ray (null: all).")
    object_store_mb: Optional[int] = Field(
        None, ge=64, description="Object store size of a locally started Ray, in MiB (null: Ray's default)."
    )
    progress: bool = Field(True, description="Ray Data progress: bars on a terminal, a progress log every 10 s "
                           "otherwise (false: none).")
    dashboard: bool = Field(True, description="Start the dashboard with a local Ray (Ray Train's state API and "
                            "operators use it).")


def parse_overrides(overrides: Iterable[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; a malformed item raises ConfigError."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            existing = node.setdefault(part, {})
            if not isinstance(existing, dict):
                raise ConfigError(f"override {key}: {part} is set both as a value and as a section")
            node = existing
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into a copy of ``base`` (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; missing file, bad YAML or a non-mapping raise ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def validate(model: Type[T], data: dict, source: str = "<dict>") -> T:
    """Validate a dict against ``model``; errors become ConfigError naming each key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(model: Type[T], path: Optional[str | os.PathLike] = None, overrides: Iterable[str] = ()) -> T:
    """Load ``model`` from a YAML file (optional) with ``key=value`` overrides applied on top."""
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides))
    source = str(path) if path is not None else "defaults"
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return validate(model, data, source)


def dump_config(cfg: BaseModel) -> str:
    """The config as YAML (what a run records next to its artifacts)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
