"""The offline caption stage through local Ray: the run's VLM captions the prepared listings,
a re-run resumes (captions only what is missing), a new model starts over."""
import json

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


def test_captions_are_written_resumed_and_restarted_for_a_new_model(prepared_marketplace, tmp_path):
    from ipl.caption.stage import KEY_FILE, CaptionConfig, caption_listings, read_captions

    run = prepared_marketplace / "t"
    listings, vlm = run / "clean" / "listings", run / "models" / "vlm-base"
    out = tmp_path / "captions"
    cats = {"phone": ["Brand", "Model", "Color"]}
    cfg = CaptionConfig(enabled=True, batch_size=4, max_new_tokens=8, max_listings=10)
    first = caption_listings(cfg, listings, out, vlm, cats)
    assert first["captioned"] == 10 and first["reused"] == 0 and first["listings_per_s"] > 0
    caps = read_captions(out)
    assert len(caps) == 10 and all(isinstance(c, str) for c in caps.values())
    files = sorted(out.glob("part-*.parquet"))
    assert files and not list(out.glob(".part-*"))  # whole files only
    assert set(pq.read_table(files[0]).column_names) == {"listing_id", "caption", "cqe_answer", "model"}
    # a killed run leaves at most a temporary file: it is not read, and the re-run captions only the rest
    (out / ".part-00099.parquet.tmp").write_bytes(b"torn")
    more = caption_listings(cfg.model_copy(update={"max_listings": 14}), listings, out, vlm, cats)
    assert more["captioned"] == 4 and more["reused"] == 10 and len(read_captions(out)) == 14
    again = caption_listings(cfg.model_copy(update={"max_listings": 14}), listings, out, vlm, cats)
    assert again["captioned"] == 0 and again["reused"] == 14
    # another model (or prompt setting): the old captions move aside, nothing is mixed; excluded
    # (held-out) listings are never captioned
    held = sorted(caps)[:5]
    changed = caption_listings(cfg.model_copy(update={"max_new_tokens": 6, "max_listings": 3}), listings, out, vlm,
                               cats, exclude=held)
    assert changed["captioned"] == 3 and changed["reused"] == 0 and len(read_captions(out)) == 3
    assert not set(read_captions(out)) & set(held)
    assert json.loads((out / KEY_FILE).read_text())["key"] == changed["key"] != first["key"]
    assert list(tmp_path.glob("captions.stale-*"))


def test_a_missing_vlm_is_refused_with_what_to_do(prepared_marketplace, tmp_path):
    from ipl.caption.stage import CaptionConfig, caption_listings

    with pytest.raises(FileNotFoundError, match="ipl train"):
        caption_listings(CaptionConfig(enabled=True), prepared_marketplace / "t" / "clean" / "listings",
                         tmp_path / "c", tmp_path / "no-vlm", {})


def test_actors_that_would_hold_every_cpu_are_refused_before_they_start(prepared_marketplace, tmp_path):
    """Ray Data's file listing needs a whole CPU: actors holding all of them would wait forever."""
    from ipl.caption.stage import CaptionConfig, caption_listings

    run = prepared_marketplace / "t"
    with pytest.raises(ValueError, match="caption.concurrency 2 x caption.num_cpus 1"):
        caption_listings(CaptionConfig(enabled=True, concurrency=2, num_cpus=1.0), run / "clean" / "listings",
                         tmp_path / "c", run / "models" / "vlm-base", {})
