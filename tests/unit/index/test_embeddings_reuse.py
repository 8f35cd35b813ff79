"""The index's kept embeddings: what their key depends on, and what a publish leaves."""
import os

import pyarrow as pa
import pyarrow.parquet as pq

from ipl.config import load_config
from ipl.index.config import IndexConfig
from ipl.index.stage import EMBEDDINGS, drop_other_embeddings, embeddings_key


def cfg_for(root, *overrides):
    return load_config(IndexConfig, None, [f"run.root={root}", "run.name=r", *overrides])


def test_the_key_follows_the_listings_encoder_and_photos_not_the_index_settings(tmp_path):
    listings = tmp_path / "r" / "clean" / "listings"
    listings.mkdir(parents=True)
    part = listings / "part-0.parquet"
    pq.write_table(pa.table({"listing_id": ["a", "b"]}), part)
    cfg = cfg_for(tmp_path)
    key = embeddings_key(cfg, "enc1")
    assert embeddings_key(cfg_for(tmp_path, "faiss.type=HNSW", "faiss.shards=3", "category.epochs=5",
                                  "evidence.target_precision=0.9"), "enc1") == key
    assert embeddings_key(cfg, "enc2") != key  # another encoder
    assert embeddings_key(cfg_for(tmp_path, "embed.photos_per_listing=1"), "enc1") != key
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the listings rewritten
    assert embeddings_key(cfg, "enc1") != key


def test_a_publish_keeps_only_the_current_vectors_or_none(tmp_path):
    root = tmp_path / "index"
    for name in ("old", "new", "new.tmp"):
        (root / EMBEDDINGS / name).mkdir(parents=True)
    drop_other_embeddings(root, root / EMBEDDINGS / "new")
    assert [p.name for p in (root / EMBEDDINGS).iterdir()] == ["new"]
    drop_other_embeddings(root, None)  # embed.keep=false
    assert not list((root / EMBEDDINGS).iterdir())
