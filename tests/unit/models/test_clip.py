"""Tiny open_clip: encoding, save/load, fingerprint, refusing downloads."""
import numpy as np
import pytest
import torch
from PIL import Image

from ipl.models.clip import WEIGHTS_NAME, load_clip


def images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)) for _ in range(n)]


def test_encode_normalised(tiny_clip):
    e = tiny_clip.encode_images(images(3))
    t = tiny_clip.encode_texts(["a red phone", "a blue jacket"])
    assert e.shape == (3, 32) and t.shape == (2, 32)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_load_round_trip_and_fingerprint(tiny_clip, tmp_path):
    import shutil

    again = load_clip(tiny_clip.source)
    assert again.fingerprint == tiny_clip.fingerprint
    assert torch.allclose(again.encode_images(images(2)), tiny_clip.encode_images(images(2)))
    # other weights, other fingerprint
    copy = tmp_path / "clip"
    shutil.copytree(tiny_clip.source, copy)
    from safetensors.torch import load_file, save_file

    state = load_file(str(copy / WEIGHTS_NAME))
    key = next(k for k in state if k.endswith("proj") or "proj" in k)
    state[key] = state[key] + 1.0
    save_file(state, str(copy / WEIGHTS_NAME))
    assert load_clip(copy).fingerprint != tiny_clip.fingerprint


def test_architecture_needs_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="local weights file"):
        load_clip("ViT-B-32")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_clip("No-Such-Arch")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_clip(empty)


def test_architecture_plus_local_weights_file(tiny_clip, tmp_path):
    """Any registered open_clip architecture loads from a local weights file (the production path)."""
    import open_clip

    from ipl.models.clip import tiny_model_cfg
    from ipl.models.config import TinyClipConfig

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    import json

    (cfg_dir / "ipl-test-arch.json").write_text(json.dumps(tiny_model_cfg(TinyClipConfig(
        embed_dim=32, image_size=64, vision_width=64, vision_layers=1, text_width=64, text_layers=1, text_heads=2))))
    open_clip.add_model_config(cfg_dir)
    weights = tmp_path / "w.safetensors"
    import shutil

    shutil.copy(f"{tiny_clip.source}/{WEIGHTS_NAME}", weights)
    clip = load_clip("ipl-test-arch", weights=weights)
    assert torch.allclose(clip.encode_texts(["red phone"]), tiny_clip.encode_texts(["red phone"]), atol=1e-5)
