"""Shared fixtures: small synthetic configs, tiny models built once per session, local Ray."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # test helpers shared by unit and integration tests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_synth_cfg():
    from ipl.synth.config import SynthConfig

    return SynthConfig(rows=400, shard_rows=200, photos_max=1, image_size=64, models={"build": False})


@pytest.fixture(scope="session")
def small_rows(small_synth_cfg):
    from ipl.synth.generate import ListingFactory

    return ListingFactory(small_synth_cfg).table(0, 300).to_pylist()


@pytest.fixture(scope="session")
def tokenizer(small_rows):
    from ipl.models.tokenizer import train_tokenizer

    texts = [r["description"] for r in small_rows] + [r["title"] for r in small_rows]
    texts.append("自用华为手机，蓝色，成色如图，有意私聊。")
    return train_tokenizer(texts, vocab_size=800)


@pytest.fixture(scope="session")
def tiny_vlm(tokenizer, tmp_path_factory):
    from ipl.models.config import TinyVLMConfig
    from ipl.models.vlm import build_tiny_vlm

    cfg = TinyVLMConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=128, vision_embed_dim=32,
                        vision_num_heads=2)
    return build_tiny_vlm(tokenizer, cfg, tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    from ipl.models.clip import build_tiny_clip
    from ipl.models.config import TinyClipConfig

    cfg = TinyClipConfig(embed_dim=32, image_size=64, vision_width=64, vision_layers=1, text_width=64,
                         text_layers=1, text_heads=2)
    return build_tiny_clip(cfg, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (integration tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()
