"""open_clip factory: a tiny local model for CPU runs, any architecture + local weights in production.

A CLIP source is either

* a directory with ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and a
  weights file (open_clip's ``local-dir:`` layout; what :func:`build_tiny_clip` and the
  contrastive fine-tuning write), or
* an open_clip architecture name (``ViT-B-32``, ``ViT-L-14``...) plus a local weights file.

Pretrained *tags* (``openai``, ``laion2b_...``) are refused: they would download.
:func:`load_clip` returns a :class:`Clip` with the model, its image preprocess, the
tokenizer (open_clip's bundled BPE) and a fingerprint of config + weights.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ipl.models.config import TinyClipConfig
from ipl.runtime import sha256_file

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Clip:
    model: Any
    preprocess: Callable  # PIL image -> tensor (eval transform)
    tokenizer: Callable  # list[str] -> LongTensor
    fingerprint: str
    source: str

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature for zero-shot logits (capped at 100, CLIP's own limit)."""
        if hasattr(self.model, "logit_scale"):
            return float(self.model.logit_scale.detach().exp().clamp(max=100))
        return 100.0

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else int(
            self.model.visual.output_dim
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: list, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings of PIL images, computed on the model's device, on the CPU."""
        out, device = [], self.device
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(im) for im in images[i : i + batch_size]]).to(device)
            out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings, computed on the model's device, on the CPU."""
        out, device = [], self.device
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(device)
            out.append(torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


def tiny_model_cfg(cfg: TinyClipConfig) -> dict:
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": cfg.image_size,
            "layers": cfg.vision_layers,
            "width": cfg.vision_width,
            "patch_size": cfg.patch_size,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": cfg.context_length,
            "vocab_size": 49408,
            "width": cfg.text_width,
            "heads": cfg.text_heads,
            "layers": cfg.text_layers,
        },
    }


def save_clip_dir(model, model_cfg: dict, out_dir: str | Path) -> Path:
    """Write ``model`` in the open_clip ``local-dir`` layout."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME))
    return out


def build_tiny_clip(cfg: TinyClipConfig, out_dir: str | Path, seed: int = 0) -> Clip:
    """Create a randomly initialised tiny open_clip model, save it, and load it back."""
    import open_clip

    torch.manual_seed(seed)
    model_cfg = tiny_model_cfg(cfg)
    model = open_clip.CLIP(**model_cfg)
    save_clip_dir(model, model_cfg, out_dir)
    return load_clip(out_dir)


def load_clip(source: str | Path, weights: Optional[str | Path] = None, device: str = "cpu") -> Clip:
    """Load a CLIP from a local directory, or from an architecture name plus a weights file."""
    import open_clip

    src = Path(str(source))
    if src.is_dir():
        if not (src / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"CLIP directory {src} has no {CONFIG_NAME}")
        name = f"local-dir:{src.resolve()}"
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, device=device, pretrained_text=False, pretrained_image=False
        )
        tokenizer = open_clip.get_tokenizer(name)
        weight_files = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin")) + sorted(src.glob("*.pt*"))
        if not weight_files:
            raise FileNotFoundError(f"CLIP directory {src} has no weights file")
        digest = hashlib.sha256(((src / CONFIG_NAME).read_bytes() + sha256_file(weight_files[0]).encode())).hexdigest()
    else:
        arch = str(source)
        if arch not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {arch!r} and no such directory")
        if weights is None or not Path(weights).is_file():
            raise FileNotFoundError(
                f"open_clip architecture {arch!r} needs a local weights file (got {weights!r}); "
                "pretrained tags are not used because they download at run time"
            )
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(weights), device=device, pretrained_text=False, pretrained_image=False
        )
        tokenizer = open_clip.get_tokenizer(arch)
        digest = hashlib.sha256((arch + sha256_file(Path(weights))).encode()).hexdigest()
    model.eval()
    return Clip(model, preprocess, tokenizer, digest[:16], str(source))
