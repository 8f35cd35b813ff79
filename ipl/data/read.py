"""Reading raw listings (Parquet, JSONL, TSV/CSV) into a Ray Dataset with canonical columns.

Canonical columns: ``listing_id, category, description`` (required), and optionally
``title, price, quality_score, risk_flags, language, photos`` (JPEG/PNG bytes) or
``photo_paths`` (local paths or URIs such as ``s3://bucket/x.jpg``, read with pyarrow.fs),
plus any other column (kept as is, e.g. ``sku_id`` or ``brand_name``). ``input.columns``
renames source columns to canonical ones (``{listing_id: train_id, description:
item_description}``). Missing required columns stop the job before any work, naming the
columns and the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ipl.config import ConfigError, Strict
from ipl.data.contract import nulls_to_none

REQUIRED = ("listing_id", "category", "description")


class InputConfig(Strict):
    """Where the raw listings are and how to read them."""

    path: Optional[str] = Field(None, description="File or directory of raw listings (null: <run>/raw).")
    format: Literal["parquet", "jsonl", "tsv", "csv"] = Field("parquet", description="Input format.")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> source column.")
    category_levels: Optional[int] = Field(
        None, ge=1, description="For '/'-separated category paths, keep the first N levels (null: all)."
    )
    limit: Optional[int] = Field(None, ge=1, description="Read at most this many rows (smoke runs).")
    block_rows: int = Field(2000, ge=1, description="Rows per Ray Data block after the read (a streaming "
                            "repartition: Ray 2.60's Parquet reader hands every file to one task as one block, which "
                            "would run each later stage as one task on one core).")


def input_path(cfg: InputConfig, run_dir: Path) -> Path:
    p = Path(cfg.path) if cfg.path else run_dir / "raw"
    if not p.exists():
        hint = " (run `ipl synth` to create it)" if not cfg.path else ""
        raise FileNotFoundError(f"raw listings not found: {p}{hint}")
    return p


def _files(path: Path, suffixes: tuple[str, ...]) -> list[str]:
    if path.is_file():
        return [str(path)]
    files = sorted(str(p) for p in path.rglob("*") if p.suffix in suffixes and not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files under {path}")
    return files


def read_listings(cfg: InputConfig, run_dir: Path, exclude: tuple = ()):
    """A lazy Ray Dataset of raw listings with canonical column names, and the canonical names
    of every input column.

    Validates the columns up front; ``exclude`` names canonical columns not to read (the
    photos, for the text-only pass)."""
    import pyarrow.csv as pacsv
    import ray

    path = input_path(cfg, run_dir)
    if cfg.format == "parquet":
        import pyarrow.parquet as pq

        files = _files(path, (".parquet",))
        names0 = pq.read_schema(files[0]).names
        rename0 = {src: dst for dst, src in cfg.columns.items()}
        wanted = [n for n in names0 if rename0.get(n, n) not in exclude]
        ds = ray.data.read_parquet(files).select_columns(wanted)  # projected into the read by Ray's optimizer
    elif cfg.format == "jsonl":
        ds = ray.data.read_json(_files(path, (".jsonl", ".json")))
    else:
        delim = "\t" if cfg.format == "tsv" else ","
        ds = ray.data.read_csv(
            _files(path, (".tsv", ".csv", ".txt")),
            parse_options=pacsv.ParseOptions(delimiter=delim, quote_char=False if delim == "\t" else '"'),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    names = ds.schema().names
    rename = {src: dst for dst, src in cfg.columns.items()}
    if cfg.format == "parquet":
        names = names0  # every column of the files, also those not read
    if exclude and cfg.format != "parquet":
        ds = ds.drop_columns([n for n in names if rename.get(n, n) in exclude])
    missing_src = [src for src in rename if src not in names]
    if missing_src:
        raise ConfigError(f"input.columns names source columns {missing_src} that {path} does not have; it has {names}")
    final = [rename.get(n, n) for n in names]
    missing = [c for c in REQUIRED if c not in final]
    if missing:
        raise ConfigError(
            f"{path}: raw listings lack the required column(s) {missing} (have {names}); "
            "map them with input.columns (e.g. input.columns.description=item_description)"
        )
    if cfg.limit:
        ds = ds.limit(cfg.limit)
    ds = ds.repartition(target_num_rows_per_block=cfg.block_rows)
    ds = ds.map_batches(canonicalize, fn_kwargs={"rename": rename, "levels": cfg.category_levels},
                        batch_format="pandas")
    return ds, final


def canonicalize(df, rename: dict, levels: Optional[int]):
    """Rename columns, listing_id and category as strings, truncate category paths."""
    df = df.rename(columns=rename)
    df["listing_id"] = df["listing_id"].astype(str)
    cats = df["category"].fillna("").astype(str)
    if levels:
        cats = cats.map(lambda c: "/".join(c.split("/")[:levels]))
    df["category"] = cats.replace("", "unknown")
    if "description" in df:
        df["description"] = df["description"].where(df["description"].notna(), None)
    return df


def load_photo_paths(paths) -> list[bytes]:
    """Bytes of photos given as local paths or URIs (any pyarrow.fs filesystem)."""
    import pyarrow.fs as pafs

    out = []
    for p in paths if paths is not None else []:
        p = str(p)
        if "://" in p:
            fs, inner = pafs.FileSystem.from_uri(p)
            with fs.open_input_stream(inner) as fh:
                out.append(fh.read())
        else:
            out.append(Path(p).read_bytes())
    return out


def ensure_photo_bytes(batch: dict) -> dict:
    """Give every row a ``photos`` column of bytes (from ``photo_paths`` when needed); a photo
    that cannot be read marks the row's ``error`` instead of failing the batch."""
    from ipl.data.arrow import plain_lists

    if "photos" in batch or "photo_paths" not in batch:
        return plain_lists(batch)
    n = len(batch["photo_paths"])
    errors = nulls_to_none(batch.get("error", [None] * n))
    photos = []
    for i in range(n):
        try:
            photos.append(load_photo_paths(batch["photo_paths"][i]))
        except Exception as exc:
            photos.append([])
            errors[i] = errors[i] or f"unreadable photo path: {type(exc).__name__}: {exc}"
    out = dict(batch)
    out["photos"] = photos
    out["error"] = errors
    return plain_lists(out)
