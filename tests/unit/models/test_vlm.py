"""Tiny Qwen2-VL: the processor, save/load through the 7B loading path, generation."""
import numpy as np
import pytest
import torch
from PIL import Image

from ipl.models.vlm import load_vlm, vision_parameters


def inputs(vlm, n_images=1):
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": "Describe the item."}]
    text = vlm.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(n_images)]
    return vlm.processor(text=[text], images=images or None, return_tensors="pt")


def test_processor_expands_image_tokens(tiny_vlm):
    batch = inputs(tiny_vlm, 2)
    image_id = tiny_vlm.model.config.image_token_id
    n_tokens = int((batch["input_ids"] == image_id).sum())
    grid = batch["image_grid_thw"]
    assert n_tokens == int(grid.prod(-1).sum()) // 4  # 2x2 spatial merge
    assert n_tokens == 2 * 16  # 112 px -> 8x8 patches -> 16 tokens per photo


def test_save_load_same_logits(tiny_vlm):
    loaded = load_vlm(tiny_vlm.path)
    assert type(loaded.model).__name__ == "Qwen2VLForConditionalGeneration"
    batch = inputs(tiny_vlm)
    tiny_vlm.model.eval()
    with torch.no_grad():
        assert torch.allclose(tiny_vlm.model(**batch).logits, loaded.model(**batch).logits, atol=1e-5)


def test_generate_text_only_and_with_image(tiny_vlm):
    vlm = load_vlm(tiny_vlm.path)
    for batch in (inputs(vlm, 1), inputs(vlm, 0)):
        out = vlm.model.generate(**batch, max_new_tokens=8, do_sample=False)
        new = out[0, batch["input_ids"].shape[1]:]
        assert 1 <= len(new) <= 8
        assert isinstance(vlm.processor.decode(new), str)


def test_vision_parameters_exclude_merger(tiny_vlm):
    params = vision_parameters(tiny_vlm.model)
    merger = {id(p) for p in tiny_vlm.model.model.visual.merger.parameters()}
    assert params and not any(id(p) in merger for p in params)


def test_missing_or_non_checkpoint_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="local directories only"):
        load_vlm(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vlm(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_vlm("Qwen/Qwen2-VL-7B-Instruct")  # a hub id is not a local directory
