"""CASLIE end to end on local Ray: ``ipl index`` with captions (offline captions, the text index,
the held-out caption evaluation, the caption:* tiers), the text index verified with the version,
and the draft reply of the Serve graph carrying the caption, the verdict and every judge's vote."""
import json
import shutil
import socket
import time

import pyarrow.dataset as pds
import pytest
import requests

from ipl.config import load_config

pytestmark = pytest.mark.integration


def writing_vlm(vlm_dir, out):
    """The fixture's untrained VLM writes only blanks; a noisy copy writes (junk) words, so the
    captions are non-empty and every judge has something to judge."""
    from lively import lively_copy

    from ipl.models.vlm import load_vlm

    vlm = load_vlm(vlm_dir)
    return lively_copy(vlm.model, vlm.processor, out)


@pytest.fixture(scope="module")
def captioned_run(prepared_marketplace, tmp_path_factory):
    from ipl.index.config import IndexConfig
    from ipl.index.stage import build

    root = prepared_marketplace
    vlm = writing_vlm(root / "t" / "models" / "vlm-base", tmp_path_factory.mktemp("lively-vlm"))
    cfg = load_config(IndexConfig, None, [
        f"run.root={root}", "run.name=c", f"listings={root}/t/clean/listings", f"encoder.path={root}/t/models/clip-base",
        # the base encoder as it is (no fine-tuning job): captions, not the encoder, are under test here
        "encoder.finetune=false", "embed.batch_size=64",
        "faiss.type=Flat", "faiss.shards=2", "category.epochs=30", "eval.holdout_fraction=0.15",
        f"evidence.templates={root}/t/templates.yaml", f"eval.instructions={root}/t/instructions",
        "caption.enabled=true", f"caption.vlm={vlm}", "caption.max_new_tokens=8",
        "caption.batch_size=8"])
    return root, cfg, build(cfg), vlm


def test_index_builds_captions_a_verified_text_index_and_caption_tiers(captioned_run, tmp_path):
    from ipl.index.manifest import IndexIntegrityError
    from ipl.index.search import ShardedIndex

    root, cfg, summary, _ = captioned_run
    # captioned: what is read -- the held-out queries and the listings `ipl eval` drafts for (caption.scope)
    from ipl.caption.stage import read_captions
    from ipl.data.instructions import split_column

    table = pds.dataset(str(cfg.listings_dir), format="parquet").to_table(columns=["listing_id", "sku_id"])
    indexed = set(ShardedIndex.load(cfg.index_root).metadata["listing_id"])
    groups = split_column(cfg.instructions_dir, cfg.eval.untrained_split, "group")
    evaluated = {lid for lid, sku in zip(table.column("listing_id").to_pylist(), table.column("sku_id").to_pylist())
                 if lid not in indexed or sku in groups}
    assert groups and len(evaluated) < table.num_rows
    assert set(read_captions(cfg.index_root / "captions")) == evaluated
    assert summary["captions"]["total"] == len(evaluated) and summary["captions"]["listings_per_s"] > 0
    assert summary["text_index"]["ntotal"] == summary["ntotal"]
    assert set(summary["caption"]["judges"]) == {"encoder", "evidence", "llm"}
    assert summary["caption"]["encoder_threshold"] is not None
    cap = summary["eval"]["caption"]
    assert cap["held_out"] == summary["holdout"] and cap["all"]["captions"] == cap["held_out"]
    assert cap["kept"]["captions"] == cap["cqe"]["kept"] <= cap["all"]["captions"]
    assert 0 <= cap["cqe"]["agreement"] <= 1 and cap["llm_answers"]["neither"] == 0  # closed yes/no
    assert {"similar_top1_image", "similar_top1_fused", "similar_top1_fused_every_caption"} <= set(cap["retrieval"])
    tiers = summary["evidence"]["tiers"]
    assert {"caption:product", "caption:sku"} <= set(tiers)
    for name in ("caption:product", "caption:sku"):  # each is fitted, or disabled with its reason
        assert tiers[name]["enabled"] or tiers[name]["reason"]
    # the text index is a file of the version: loaded with it, and a corrupted one is refused
    version = cfg.index_root / summary["version"]
    index = ShardedIndex.load(version)
    assert index.text_index is not None and index.text_index.ntotal == index.ntotal
    v = index.text_index.reconstruct(0)
    hit = index.search_text(v[None, :], 1)[0][0]
    assert hit["id"] == 0 and hit["listing_id"] == index.metadata.loc[0]["listing_id"]
    bad = tmp_path / "v"
    shutil.copytree(version, bad)
    (bad / "text.faiss").write_bytes(b"\0" + (bad / "text.faiss").read_bytes()[1:])
    with pytest.raises(IndexIntegrityError, match="text.faiss"):
        ShardedIndex.load(bad)
    # a re-run reuses every caption (resumable, keyed by model and prompt); scope=all adds the others
    from ipl.index.captions import run_captions
    from ipl.index.calibration import key_levels

    again = run_captions(cfg, key_levels(cfg), evaluated=evaluated)
    assert again["captioned"] == 0 and again["reused"] == len(evaluated)
    every = cfg.model_copy(update={"caption": cfg.caption.model_copy(update={"scope": "all",
                                                                             "max_listings": len(evaluated) + 4})})
    more = run_captions(every, key_levels(cfg), evaluated=evaluated)
    assert more["captioned"] == 4 and len(set(read_captions(cfg.index_root / "captions")) - evaluated) == 4


@pytest.mark.slow  # a second Serve application of its own (~1.5 min): `make test-slow` runs it
def test_the_draft_reply_carries_the_caption_its_verdict_and_every_vote(captioned_run, ray_local):
    from ray import serve

    from ipl.serve.samples import held_out_examples
    from ipl.serve.stage import load_serve_config, start

    root, cfg, summary, vlm = captioned_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scfg = load_serve_config("serve_configs/local.yaml", [
        f"run.root={root}", "run.name=c", f"models.vlm={vlm}", f"models.clip={root}/t/models/clip-base",
        f"models.templates={root}/t/templates.yaml", f"http.port={port}", "generate.max_new_tokens=16",
        "safety.prohibited=[]", "deployments.generator.autoscaling=null", "deployments.generator.num_replicas=1",
        "deployments.generator.num_cpus=0.2", "retrieval.refresh_s=0", "retrieval.category_min_score=0.0",
        "caption.enabled=true", "caption.max_new_tokens=8", "caption.skip_uncalibrated=false"])
    url = start(scfg)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        ex = held_out_examples(root / "t" / "clean" / "listings", cfg.index_root, n=2)[0]
        files = [("photos", (f"p{i}.jpg", p, "image/jpeg")) for i, p in enumerate(ex["photos"])]
        reply = requests.post(url + "/v1/listings/draft", files=files, data={"stream": "false"}, timeout=120).json()
        cap = reply["caption"]
        assert cap["text"].strip() and cap["calibrated"] is True
        votes = cap["verdict"]["votes"]
        assert [v["judge"] for v in votes] == ["encoder", "evidence", "llm"]
        assert all(v["reason"] for v in votes) and cap["keep"] == (sum(v["keep"] for v in votes) >= 2)
        assert cap["image_caption_cosine"] is not None  # the encoder judge had the photos' embedding
        assert "caption_ms" in reply["timings"]
        # a value only a caption states is a fact only through an enabled caption tier
        from ipl.evidence.assess import tier_for

        tiers = summary["evidence"]["tiers"]
        for a in reply["attributes"]:
            if a["basis"] == "caption":
                assert a["status"] == "stated" and tier_for(tiers, "caption", a["level"], a["key"])["enabled"]
        json.dumps(reply)  # JSON-ready
        if not any(t["enabled"] for n, t in tiers.items() if n.startswith("caption:")):
            # the default: an index whose captions reached no tier is not captioned at all (no VLM call)
            from ipl.serve.app import build

            default = scfg.model_copy(update={"caption": scfg.caption.model_copy(update={"skip_uncalibrated": True})})
            serve.run(build(default), name=default.name, route_prefix=default.route_prefix, blocking=False)
            time.sleep(2)
            again = requests.post(url + "/v1/listings/draft", files=files, data={"stream": "false"}, timeout=120).json()
            assert again["caption"]["skipped"] and again["caption"]["keep"] is False
            assert "caption_ms" not in again["timings"]
    finally:
        serve.shutdown()
