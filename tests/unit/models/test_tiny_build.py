"""``ipl synth``'s model build: with compare_tiny_clip the tiny ViT is built beside the packaged
base CLIP (for eval's side-by-side real-photo figures), and the build record says so."""
import json

from ipl.models.config import TinyModelsConfig
from ipl.models.tiny import build_tiny_models


def test_compare_tiny_clip_builds_models_clip_tiny_and_reuses_it(small_synth_cfg, small_rows, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.Table.from_pylist(small_rows[:60]), raw / "part-0.parquet")
    cfg = TinyModelsConfig(vocab_size=400, tokenizer_rows=60, vlm_pretrain_steps=0, clip_pretrain_steps=0,
                           compare_tiny_clip=True, packaged_clip={"embed_dim": 32})
    info = build_tiny_models(cfg, tmp_path, "fp")
    models = tmp_path / "models"
    assert info["clip"]["model"] == "packaged" and info["compare_clip"]["model"] == "tiny"
    assert (models / "clip-tiny" / "open_clip_config.json").is_file()
    assert info["compare_clip"]["fingerprint"] != info["clip"]["fingerprint"]
    assert json.loads((models / "_build.json").read_text())["compare_clip"]["path"] == str(models / "clip-tiny")
    again = build_tiny_models(cfg, tmp_path, "fp")  # same key: reused, not rebuilt
    assert again["compare_clip"] == info["compare_clip"]
    off = build_tiny_models(cfg.model_copy(update={"compare_tiny_clip": False}), tmp_path, "fp")
    assert "compare_clip" not in off


def test_the_clip_side_built_in_a_second_process_is_the_one_built_here(small_rows, tmp_path):
    """``parallel``: the CLIP side runs in a spawned process while the VLM trains; same seeds, same models."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    infos = {}
    for parallel in (True, False):
        run = tmp_path / str(parallel)
        (run / "raw").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(small_rows[:60]), run / "raw" / "part-0.parquet")
        cfg = TinyModelsConfig(vocab_size=400, tokenizer_rows=60, vlm_pretrain_steps=0, clip_pretrain_steps=0,
                               compare_tiny_clip=True, packaged_clip={"embed_dim": 32}, parallel=parallel)
        infos[parallel] = build_tiny_models(cfg, run, "fp")
        record = json.loads((run / "models" / "_build.json").read_text())
        assert record["clip_key"] and record["vlm"]["path"] and record["compare_clip"]["path"]
    for side in ("clip", "compare_clip"):
        assert infos[True][side]["fingerprint"] == infos[False][side]["fingerprint"]
    assert infos[True]["key"] == infos[False]["key"]  # the switch does not rebuild the VLM


def test_the_pretraining_corpus_is_rendered_once_for_both_clips(small_rows, tmp_path):
    """The base CLIP and the tiny ViT for comparison are pretrained on the same corpus: it is made once."""
    from ipl.models.tiny import clip_side

    calls = []

    def corpus(n):
        calls.append(n)
        return [dict(r) for r in small_rows[:n]]

    cfg = TinyModelsConfig(vocab_size=400, tokenizer_rows=60, vlm_pretrain_steps=0, clip_pretrain_steps=2,
                           clip_pretrain_rows=40, clip_batch_size=8, compare_tiny_clip=True,
                           packaged_clip={"embed_dim": 32})
    (tmp_path / "models").mkdir()
    out = clip_side(cfg, tmp_path / "models", corpus)
    assert calls == [40]
    assert out["clip"]["pretrain"]["photos"] == out["compare_clip"]["pretrain"]["photos"] > 0
