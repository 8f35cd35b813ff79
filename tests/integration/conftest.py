"""A small marketplace through the real `ipl synth` and `ipl prepare` stages, shared by the
integration tests of the later stages (train, index, serve, eval)."""
import pytest

from ipl.config import load_config


@pytest.fixture(scope="session")
def prepared_marketplace(ray_local, tmp_path_factory):
    from ipl.data.config import PrepareConfig
    from ipl.data.pipeline import run_prepare
    from ipl.synth.config import SynthConfig
    from ipl.synth.stage import run as run_synth

    root = tmp_path_factory.mktemp("market")
    common = [f"run.root={root}", "run.name=t"]
    run_synth(load_config(SynthConfig, None, [*common, "rows=300", "shard_rows=150", "photos_max=1",
                                              "models.tokenizer_rows=300", "models.clip_pretrain_steps=0", "models.vlm_pretrain_steps=0",
                                              # the serving tests' thresholds (blocklist copy, evidence) were set on
                                              # the tiny ViT; the packaged CLIP: test_synth_job, unit tests, test_prepare_job (slow)
                                              "models.clip_model=tiny",
                                              "models.vlm.hidden_size=64", "models.vlm.num_hidden_layers=2",
                                              "models.vlm.intermediate_size=128",
                                              # few SKUs with several listings each: held-out photos have
                                              # their SKU in the index (retrieval and serving tests)
                                              "catalogue.brands_per_category=2", "catalogue.models_per_brand=1",
                                              "catalogue.colors_per_spu=2", "catalogue.variants_per_spu=1"]))
    run_prepare(load_config(PrepareConfig, None, [*common, "consistency.enabled=false",
                                                  "instructions.validation_fraction=0.2",
                                                  "instructions.llamafactory_export=false"]))
    return root


@pytest.fixture(scope="session")
def served_run(prepared_marketplace):
    """An index + category head for run 's' over the prepared marketplace's listings (serve and eval tests)."""
    from ipl.index.config import IndexConfig
    from ipl.index.stage import build

    root = prepared_marketplace
    cfg = load_config(IndexConfig, None, [
        f"run.root={root}", "run.name=s", f"listings={root}/t/clean/listings", f"encoder.path={root}/t/models/clip-base",
        "encoder.steps=20", "encoder.batch_size=32", "encoder.scaling.cpus_per_worker=0.5", "embed.batch_size=64",
        "faiss.type=Flat", "faiss.shards=2", "category.epochs=60", "eval.holdout_fraction=0.15"])
    summary = build(cfg)
    return root, summary
