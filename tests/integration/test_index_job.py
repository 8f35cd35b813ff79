"""`ipl index` on local Ray: Ray Train fine-tuning of the tiny CLIP, Ray Data embedding, shards
built by Ray tasks, publish/reuse/rebuild/rollback, a corrupted version refused, search and
category prediction for a held-out photo."""
import io
import json

import numpy as np
import pyarrow.dataset as pds
import pytest
from PIL import Image

from ipl.config import load_config
from ipl.index.category import CategoryPredictor
from ipl.index.config import IndexConfig
from ipl.index.manifest import IndexIntegrityError, current_version, versions
from ipl.index.search import ShardedIndex
from ipl.index.stage import build, main
from ipl.models.clip import load_clip

pytestmark = pytest.mark.integration


def index_cfg(root, *overrides):
    return load_config(IndexConfig, None, [
        f"run.root={root}", "run.name=t", "encoder.steps=4", "encoder.batch_size=16",
        "encoder.scaling.cpus_per_worker=0.5", "embed.batch_size=32", "faiss.type=IVF-Flat", "faiss.shards=2",
        "faiss.nprobe=4", "category.epochs=30", "eval.holdout_fraction=0.2", *overrides])


def labels_of(cfg, ids):
    """The categories of the listings ``ids``."""
    t = pds.dataset(str(cfg.listings_dir), format="parquet").to_table(columns=["listing_id", "category"])
    return [c for lid, c in zip(t.column("listing_id").to_pylist(), t.column("category").to_pylist()) if lid in ids]


def test_index_build_search_reuse_rollback(prepared_marketplace):
    root = prepared_marketplace
    cfg = index_cfg(root)
    s = build(cfg)
    assert s["version"] == "v0001" and current_version(cfg.index_root) == "v0001"
    assert s["finetune"]["steps"] == 4 and (cfg.clip_dir / "open_clip_config.json").is_file()
    listings = pds.dataset(str(cfg.listings_dir), format="parquet").count_rows()
    assert s["ntotal"] + s["holdout"] == listings and s["holdout"] > 0
    assert len(s["shards"]) == 2 and s["shards"][0]["id_end"] == s["shards"][1]["id_start"]
    ev = s["eval"]
    assert ev["queries"] == s["holdout"]
    # the listings of the instruction validation split's SKUs (what `ipl eval` drafts for) stay in the
    # index but out of every model it trains: the encoder's fine-tuning and the category head
    split = pds.dataset(str(root / "t" / "instructions" / "split=validation"), format="parquet")
    eval_skus = set(split.to_table(columns=["group"]).column("group").to_pylist())
    table = pds.dataset(str(cfg.listings_dir), format="parquet").to_table(columns=["listing_id", "sku_id"])
    untrained = {lid for lid, sku in zip(table.column("listing_id").to_pylist(), table.column("sku_id").to_pylist())
                 if sku in eval_skus}
    assert untrained and s["untrained"] == len(untrained) == s["build"]["untrained"]
    assert s["finetune"]["untrained"] == len(untrained)
    indexed_ids = set(ShardedIndex.load(cfg.index_root).metadata["listing_id"])
    assert untrained & indexed_ids  # still references for drafts
    labels = json.loads((cfg.category_dir / "labels.json").read_text())
    assert labels["trained"] == len(indexed_ids - untrained)
    # the product heads (brand, model per category) learnt from the same listings, and were stored
    # in the version with the encoder's fingerprint; each reads the vector the search uses
    heads = json.loads((cfg.index_root / s["version"] / "product-heads.json").read_text())
    assert heads["encoder"] == s["encoder"]["fingerprint"] and {h["key"] for h in heads["heads"]} == {"Brand", "Model"}
    assert all(h["trained"] <= sum(c == h["category"] for c in labels_of(cfg, indexed_ids - untrained))
               for h in heads["heads"])
    assert s["eval"]["product_heads"]["heads"] == len(heads["heads"])
    # the calibration read categories from heads fitted without the query's SKU; the served head beside them
    for key in ("identical_top1", "similar_top1", "category_top1", "category_top1_zero_shot",
                "category_top1_served_head", "same_spu_colour_top1", "same_spu_colour_top1_text"):
        assert 0 <= ev[key] <= 1, key
    assert ev["similar_top1"] >= ev["identical_top1"]  # same SKU implies same SPU
    assert s["thresholds"]["calibrated"] is True
    # the evidence model was calibrated on the held-out queries: every tier is either enabled with a
    # threshold whose held-out precision reaches the target, or disabled with its reason
    evidence = s["evidence"]
    assert evidence["queries"] == 2 * s["holdout"] and evidence["target_precision"] == 0.95
    assert evidence["level_targets"] == {"product": 0.96}  # brand and model: the item's identity
    assert {"identical", "category", "identical:product", "identical:sku", "similar:product",
            "similar:sku"} <= set(evidence["tiers"])
    for name, tier in evidence["tiers"].items():
        assert tier["target"] == (0.96 if ":product" in name else 0.95), name
        if tier["enabled"]:
            assert tier["precision"] >= tier["target"] and tier["threshold"] is not None, name
        else:
            assert tier.get("reason") or tier.get("policy"), name
    assert set(evidence["disabled"]) == {n for n, t in evidence["tiers"].items() if not t["enabled"] and "policy" not in t}
    if "identical" in evidence["disabled"]:
        assert s["thresholds"]["identical"] is None  # disabled loudly, never max+epsilon
    vocab = json.loads((cfg.index_root / s["version"] / "vocabulary.json").read_text())
    scored = {"Brand", "Model", "Color", "Storage", "Size", "Config", "Lens", "Edition", "Case size", "Material"}
    assert vocab and all(scored & set(keys) for keys in vocab.values())
    # the item's own condition too: a draft states it only when the seller gave it (guard, verification)
    assert any("Condition" in keys for keys in vocab.values())
    # the distinctive first words of multi-word product values ("iPhone" of "iPhone 12"), which the guard
    # blocks where their values are blocked; never an ordinary word of the sellers' texts
    leads = json.loads((cfg.index_root / s["version"] / "manifest.json").read_text())["leading_words"]
    assert leads and all(v.startswith(w + " ") for w, values in leads.items() for v in values)
    assert not {"The", "the", "New", "Used"} & set(leads)
    # per category, the other categories' names its sellers rarely write (the guard blocks them)
    elsewhere = json.loads((cfg.index_root / s["version"] / "manifest.json").read_text())["category_words"]
    assert set(elsewhere) == set(vocab) and all(c not in names and set(names) <= set(vocab)
                                                for c, names in elsewhere.items())
    assert any(elsewhere.values())

    # a held-out photo: its SKU's other listings are in the index; hits carry metadata
    clip = load_clip(cfg.clip_dir)
    index = ShardedIndex.load(cfg.index_root, dim=clip.dim, fingerprint=clip.fingerprint)
    assert index.ntotal == s["ntotal"]
    indexed = set(index.metadata["listing_id"])
    rows = pds.dataset(str(cfg.listings_dir), format="parquet").to_table(
        columns=["listing_id", "sku_id", "category", "photos"]).to_pylist()
    held = [r for r in rows if r["listing_id"] not in indexed]
    assert held and all(r["sku_id"] in set(index.metadata["sku_id"]) for r in held)
    vec = clip.encode_images([Image.open(io.BytesIO(held[0]["photos"][0])).convert("RGB")]).numpy()
    hits = index.search(vec, 5)[0]
    # what serving's guard and verification read: the category's own values first, then the same
    # keys' values of the other categories (another category's brand is a wrong brand too)
    cat = held[0]["category"]
    merged = index.vocabulary(cat)
    assert merged["Brand"][:len(vocab[cat]["Brand"])] == vocab[cat]["Brand"]
    assert set(merged["Brand"]) == {b for keys in vocab.values() for b in keys.get("Brand", [])} > set(vocab[cat]["Brand"])
    assert set(merged) == set(vocab[cat])
    assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"]
    assert {"listing_id", "sku_id", "spu_id", "category", "price", "description", "attributes", "identical"} <= set(hits[0])
    pred = CategoryPredictor.load(clip, cfg.category_dir)
    assert pred.source == "head" and len(pred.predict(vec, 3)[0]) == 3
    headed = heads["heads"][0]["category"]  # a category with 20+ labelled listings (the fixture is small)
    product = index.product.predict(vec[0] / np.linalg.norm(vec[0]), headed, 3)
    assert product and set(product) == {h["key"] for h in heads["heads"] if h["category"] == headed}
    assert all(0 <= c["score"] <= 1 for values in product.values() for c in values)

    # same command again: reused; rebuild=true: a new version; rollback; a damaged version refused
    assert build(cfg)["reused"] is True and versions(cfg.index_root) == ["v0001"]
    v2 = build(index_cfg(root, "rebuild=true", "faiss.type=HNSW", "faiss.shards=3"))
    assert v2["version"] == "v0002" and v2["index_type"] == "HNSW" and len(v2["shards"]) == 3
    assert v2["finetune"].get("reused") is True  # the encoder did not change
    # nor did the listings: the vectors of the first build are read again, not embedded again
    assert s["build"]["embeddings_reused"] is False and v2["build"]["embeddings_reused"] is True
    kept = list((cfg.index_root / ".embeddings").iterdir())
    assert len(kept) == 1 and (kept[0] / "_DONE").is_file() and v2["ntotal"] == s["ntotal"]
    assert json.loads((cfg.index_root / "v0002" / "manifest.json").read_text())["previous"] == "v0001"
    assert main(index_cfg(root, "action=rollback")) == 0 and current_version(cfg.index_root) == "v0001"
    shard = cfg.index_root / "v0002" / "shard-002.faiss"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(IndexIntegrityError, match="truncated"):
        ShardedIndex.load(cfg.index_root / "v0002")
    assert main(index_cfg(root, "action=verify")) == 0  # v0001 still serves
    assert np.isfinite(ShardedIndex.load(cfg.index_root).search_raw(vec, 1)[0]).all()


def test_index_without_clean_listings_says_which_command(tmp_path, ray_local):
    with pytest.raises(FileNotFoundError, match="run `ipl prepare` first"):
        build(load_config(IndexConfig, None, [f"run.root={tmp_path}", "run.name=none"]))
