"""Vision-language model factory (Qwen2-VL family), local directories only.

* ``build_tiny_vlm(tokenizer, cfg, out_dir)`` creates a tiny, randomly initialised
  ``Qwen2VLForConditionalGeneration`` whose special-token ids match ``tokenizer`` and saves
  model + processor with ``save_pretrained``.
* ``load_vlm(path)`` loads any Qwen2-VL-family checkpoint directory (the tiny one or a real
  Qwen2-VL-7B-Instruct) with its processor: the same code path for both. It refuses hub ids:
  nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ipl.models.config import TinyVLMConfig
from ipl.models.tokenizer import special_token_ids

log = logging.getLogger("ipl.models")

PATCH = 14
MERGE = 2


POLICY_FILE = "ipl_images.json"  # the image policy a model was trained with (ipl.config.ImagePolicy)


@dataclass
class VLM:
    model: Any  # transformers PreTrainedModel (Qwen2VLForConditionalGeneration or a sibling)
    processor: Any  # Qwen2VLProcessor
    path: Path
    images: Any = None  # its ImagePolicy (load_vlm: the directory's)

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def set_image_policy(processor, policy) -> None:
    """The Qwen2-VL processor's ``min_pixels``/``max_pixels`` set to the policy's bounds."""
    from transformers.image_utils import SizeDict

    ip = getattr(processor, "image_processor", processor)
    ip.size = SizeDict(shortest_edge=policy.min_pixels, longest_edge=policy.max_pixels)
    for name in ("min_pixels", "max_pixels"):
        if hasattr(ip, name):
            setattr(ip, name, getattr(policy, name))


def processor_policy(processor, max_photos: int = 2):
    """The ImagePolicy a processor's own bounds describe (a checkpoint without ``ipl_images.json``)."""
    from ipl.config import ImagePolicy

    size = getattr(getattr(processor, "image_processor", processor), "size", None)
    lo = getattr(size, "shortest_edge", None) or 56 * 56
    hi = getattr(size, "longest_edge", None) or 28 * 28 * 1280
    return ImagePolicy(min_pixels=max(28 * 28, int(lo)), max_pixels=max(int(lo), int(hi)), max_photos=max_photos)


def capped_policy(policy, max_photos: Optional[int]):
    """The model's image policy with at most ``max_photos`` photos (None: as it is)."""
    if max_photos is None or max_photos >= policy.max_photos:
        return policy
    return policy.model_copy(update={"max_photos": max_photos})


def save_image_policy(model_dir: str | Path, policy) -> None:
    from ipl.runtime import write_json_atomic

    write_json_atomic(Path(model_dir) / POLICY_FILE, policy.model_dump())


def image_policy_of(model_dir: str | Path, processor=None):
    """The image policy stored with a model directory (``ipl train`` writes it); without one, the
    bounds its processor config holds and 2 photos."""
    import json

    from ipl.config import ImagePolicy

    f = Path(model_dir) / POLICY_FILE
    if f.is_file():
        return ImagePolicy.model_validate(json.loads(f.read_text()))
    if processor is None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(Path(model_dir), local_files_only=True)
    return processor_policy(processor)


def require_local_dir(path: str | Path, what: str, hint: str = "") -> Path:
    """A model directory that must exist locally (hub ids are not accepted)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} directory not found: {p} (models load from local directories only){': ' + hint if hint else ''}"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what} directory {p} has no config.json: not a save_pretrained checkpoint")
    return p


def image_processor_for(side: int):
    """Qwen2-VL image processor sized so a photo of about ``side`` px keeps its resolution."""
    from transformers import Qwen2VLImageProcessor

    unit = PATCH * MERGE
    pixels = max(unit, (side // unit) * unit) ** 2
    return Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=PATCH, merge_size=MERGE)


def build_tiny_vlm(tokenizer, cfg: TinyVLMConfig, out_dir: str | Path, seed: int = 0) -> VLM:
    """Create, save and return a tiny Qwen2-VL that uses ``tokenizer``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    ids = special_token_ids(tokenizer)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    if head_dim * cfg.num_attention_heads != cfg.hidden_size or head_dim % 8:
        raise ValueError(f"hidden_size {cfg.hidden_size} / heads {cfg.num_attention_heads} must give a head_dim divisible by 8")
    half = head_dim // 2  # mrope splits the rotary half-dim into temporal/height/width sections
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=cfg.vision_depth,
            embed_dim=cfg.vision_embed_dim,
            hidden_size=cfg.hidden_size,
            num_heads=cfg.vision_num_heads,
            mlp_ratio=2,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    processor = Qwen2VLProcessor(
        image_processor=image_processor_for(cfg.image_side),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=tokenizer.chat_template,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen2-VL: %.2fM parameters saved to %s", n / 1e6, out)
    return VLM(model, processor, out)


def load_vlm(path: str | Path, dtype: Optional[torch.dtype] = None, device: str = "cpu", hint: str = "") -> VLM:
    """Load a Qwen2-VL-family checkpoint directory and its processor (local files only)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    p = require_local_dir(path, "VLM", hint)
    processor = AutoProcessor.from_pretrained(p, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(p, local_files_only=True, dtype=dtype or torch.float32)
    model.to(device)
    model.eval()
    policy = image_policy_of(p, processor)
    set_image_policy(processor, policy)
    return VLM(model, processor, p, policy)


def count_params_b(model_dir: str | Path) -> Optional[float]:
    """Parameters (billions) of a save_pretrained directory from its safetensors headers (no weights
    are read); None when the directory or its safetensors are not here."""
    import json
    import struct

    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total / 1e9


def model_fingerprint(vlm_dir: Path) -> str:
    """Changes when the checkpoint does: its config and the size/mtime of each weights file."""
    vlm_dir = Path(vlm_dir)
    h = hashlib.sha256((vlm_dir / "config.json").read_bytes())
    for f in sorted(vlm_dir.glob("*.safetensors")) + sorted(vlm_dir.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def vision_parameters(model) -> list[torch.nn.Parameter]:
    """The vision encoder's parameters (frozen in fine-tuning); the merger is not included."""
    visual = model.model.visual if hasattr(model, "model") else model.visual
    merger = set(id(p) for p in visual.merger.parameters())
    return [p for p in visual.parameters() if id(p) not in merger]
