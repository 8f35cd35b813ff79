"""open_clip factory: a tiny local model for CPU runs, any architecture + local weights in production.

A CLIP source is either

* a directory with ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and a
  weights file (open_clip's ``local-dir:`` layout; what :func:`build_tiny_clip` and the
  contrastive fine-tuning write), or
* an open_clip architecture name (``ViT-B-32``, ``ViT-L-14``...) plus a local weights file.

A directory whose text tower is a Hugging Face model names it by a path, relative to the
directory (``"."``: its own ``config.json`` and tokenizer files, the layout of
:mod:`ipl.models.packaged`) or absolute; nothing is fetched from a hub. Its
``open_clip_config.json`` may say which towers are locked (``ipl.lock``): those stay frozen in
training, and :func:`lit_split` lets training compute a locked tower's features once.

Pretrained *tags* (``openai``, ``laion2b_...``) are refused: they would download.
:func:`load_clip` returns a :class:`Clip` with the model, its image preprocess, the
tokenizer (open_clip's bundled BPE) and a fingerprint of config + weights.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ipl.models.config import TinyClipConfig
from ipl.photos import count
from ipl.runtime import sha256_file

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
# a Hugging Face text tower's config and tokenizer files, kept beside the weights (hf_model_name ".")
HF_TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                 "merges.txt", "vocab.json")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TRUNK_RUNTIMES = ("auto", "onnxruntime", "torch")
_ORT_LOCK = threading.Lock()


@dataclass
class Clip:
    model: Any
    preprocess: Callable  # PIL image -> tensor (eval transform)
    tokenizer: Callable  # list[str] -> LongTensor
    fingerprint: str
    source: str
    channels_last: bool = False  # a convolutional image tower runs faster on the CPU in this layout
    feature_cache: Any = None  # an ipl.models.feature_cache.FeatureCache of the image trunk's features
    # "onnxruntime": a convolutional trunk in eval mode on the CPU runs on ONNX Runtime
    # (ipl.models.trunk_runtime, ~3x torch eager here); "torch": always torch
    trunk_runtime: str = "torch"
    _ort: Any = field(default=None, init=False, repr=False, compare=False)  # the exported trunk, once used

    def _ort_trunk(self):
        """The ONNX Runtime trunk when it applies now (None: run torch), exported again when the
        trunk's weights changed since."""
        if self.trunk_runtime != "onnxruntime":
            return None
        trunk = self.model.visual.trunk
        if trunk.training or self.device.type != "cpu":
            return None
        if self._ort is None or not self._ort.matches(trunk):
            with _ORT_LOCK:  # concurrent request threads of a serving replica export it once
                if self._ort is None or not self._ort.matches(trunk):
                    from ipl.models.trunk_runtime import try_ort_trunk

                    self._ort = try_ort_trunk(trunk, tuple(self.model.visual.image_size))
                    if self._ort is None:
                        self.trunk_runtime = "torch"
        return self._ort

    def _run_trunk(self, images: list) -> torch.Tensor:
        """The trunk's features of PIL images, float32 on the CPU."""
        ort = self._ort_trunk()
        if ort is not None:
            return ort(torch.stack([self.preprocess(im) for im in images]))
        return self.model.visual.trunk(self._pixels(images)).float().cpu()

    def use_feature_cache(self, root: str | Path) -> bool:
        """Keep the image trunk's features under ``root`` (:mod:`ipl.models.feature_cache`), for
        an image tower split into a trunk and a head (open_clip's timm towers); returns whether
        the cache is on (False for any other tower: it runs whole, as before)."""
        visual = getattr(self.model, "visual", None)
        if getattr(visual, "trunk", None) is None or getattr(visual, "head", None) is None:
            return False
        from ipl.models.feature_cache import FeatureCache, trunk_key

        self.feature_cache = FeatureCache(root, trunk_key(visual.trunk, self.preprocess))
        return True

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature for zero-shot logits (capped at 100, CLIP's own limit)."""
        if hasattr(self.model, "logit_scale"):
            return float(self.model.logit_scale.detach().exp().clamp(max=100))
        return 100.0

    @property
    def dim(self) -> int:
        if hasattr(self.model, "text_projection"):
            return int(self.model.text_projection.shape[1])
        return int(self.model.text.output_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pixels(self, images: list) -> torch.Tensor:
        """A batch of preprocessed PIL images on the model's device (channels-last for a conv tower)."""
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def trunk_features(self, images: list, batch_size: int = 64) -> torch.Tensor:
        """The image trunk's features of PIL images (float32, on the CPU): read from the feature
        cache when one is on, the rest computed in batches on the model's device (and cached)."""
        cache = self.feature_cache
        keys, feats = None, [None] * len(images)
        if cache is not None:
            from ipl.models.feature_cache import photo_key

            keys = [photo_key(im) for im in images]
            feats = [None if f is None else torch.from_numpy(f) for f in cache.get(keys)]
        todo = [i for i, f in enumerate(feats) if f is None]
        for j in range(0, len(todo), batch_size):
            batch = todo[j : j + batch_size]
            new = self._run_trunk([images[i] for i in batch])
            if cache is not None:
                cache.put([keys[i] for i in batch], new.numpy())
            for i, f in zip(batch, new):
                feats[i] = f
        return torch.stack(feats) if feats else torch.empty(0, 0)

    @torch.no_grad()
    def encode_images(self, images: list, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings of PIL images, computed on the model's device, on the CPU
        (through the trunk's feature cache when one is on: only the head runs for a cached photo;
        the trunk on ONNX Runtime where :attr:`trunk_runtime` says so)."""
        out, device = [], self.device
        count("encoded", len(images))
        if self.feature_cache is not None or self._ort_trunk() is not None:
            head = self.model.visual.head
            dtype = next(iter(head.parameters()), torch.empty(0)).dtype  # the head's own precision
            for i in range(0, len(images), batch_size):
                feats = self.trunk_features(images[i : i + batch_size], batch_size).to(device, dtype)
                out.append(torch.nn.functional.normalize(head(feats).float(), dim=-1).cpu())
        else:
            for i in range(0, len(images), batch_size):
                x = self._pixels(images[i : i + batch_size])
                out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings, computed on the model's device, on the CPU.

        A Hugging Face text tower (the packaged MiniLM) masks its padding, so its texts are taken
        in order of length and each batch is cut to its longest text: the same embeddings (to
        ~1e-7) for less attention over padding (1.9x here for listing titles). Other towers get
        the tokenizer's full context, as they were trained."""
        if not texts:
            return torch.empty(0, self.dim)
        device = self.device
        tokens = self.tokenizer(list(texts))
        pad = getattr(getattr(getattr(self.model, "text", None), "config", None), "pad_token_id", None)
        if pad is None:
            order = torch.arange(len(texts))
            lengths = None
        else:
            lengths = (tokens != pad).sum(1)
            order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(texts), self.dim)
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            batch = tokens[rows]
            if lengths is not None:
                batch = batch[:, : max(1, int(lengths[rows].max()))]
            out[rows] = torch.nn.functional.normalize(self.model.encode_text(batch.to(device)).float(), dim=-1).cpu()
        return out


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


def save_clip_dir(model, model_cfg: dict, out_dir: str | Path, mean=None, std=None, extra: Optional[dict] = None,
                  like: Optional[str | Path] = None) -> Path:
    """Write ``model`` in the open_clip ``local-dir`` layout.

    ``like``: a CLIP directory whose preprocess, ``ipl`` section and text-tower files (a
    Hugging Face text tower named ``"."``) are carried over (fine-tuning writes its result so)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(mean or OPENAI_MEAN), "std": list(std or OPENAI_STD)}}
    if like is not None and (Path(like) / CONFIG_NAME).is_file():
        base = json.loads((Path(like) / CONFIG_NAME).read_text())
        meta["preprocess_cfg"] = base.get("preprocess_cfg", meta["preprocess_cfg"])
        if "ipl" in base:
            meta["ipl"] = base["ipl"]
        if (model_cfg.get("text_cfg") or {}).get("hf_model_name") == ".":
            for name in HF_TEXT_FILES:
                if (Path(like) / name).is_file() and (Path(like) / name).resolve() != (out / name).resolve():
                    shutil.copyfile(Path(like) / name, out / name)
    meta.update(extra or {})
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


def load_clip(source: str | Path, weights: Optional[str | Path] = None, device: str = "cpu",
              feature_cache: Optional[str | Path] = None, trunk_runtime: Optional[str] = None) -> Clip:
    """Load a CLIP from a local directory, or from an architecture name plus a weights file.

    ``feature_cache``: a directory for the image trunk's features (:meth:`Clip.use_feature_cache`).
    ``trunk_runtime``: ``auto`` (default; the ``IPL_CLIP_TRUNK_RUNTIME`` environment variable
    overrides it): ONNX Runtime for a convolutional trunk on the CPU, torch otherwise;
    ``onnxruntime`` or ``torch`` to choose (:mod:`ipl.models.trunk_runtime`)."""
    import open_clip

    src = Path(str(source))
    meta: dict = {}
    if src.is_dir():
        if not (src / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"CLIP directory {src} has no {CONFIG_NAME}")
        weight_files = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin")) + sorted(src.glob("*.pt*"))
        if not weight_files:
            raise FileNotFoundError(f"CLIP directory {src} has no weights file")
        meta = json.loads((src / CONFIG_NAME).read_text())
        digest = clip_fingerprint(src)
        if ((meta.get("model_cfg") or {}).get("text_cfg") or {}).get("hf_model_name"):
            model, preprocess, tokenizer = _load_hf_text_dir(src, meta, weight_files[0], device)
        else:
            name = f"local-dir:{src.resolve()}"
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, device=device, pretrained_text=False, pretrained_image=False
            )
            tokenizer = open_clip.get_tokenizer(name)
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
        digest = clip_fingerprint(arch, weights)
    lock = (meta.get("ipl") or {}).get("lock")
    if lock is not None:
        lock_towers(model, lock)
    channels_last = _conv_image_tower(model)
    if channels_last:
        model.visual.trunk.to(memory_format=torch.channels_last)
    model.eval()
    runtime = trunk_runtime or os.environ.get("IPL_CLIP_TRUNK_RUNTIME") or "auto"
    if runtime not in TRUNK_RUNTIMES:
        raise ValueError(f"trunk_runtime {runtime!r}: expected one of {', '.join(TRUNK_RUNTIMES)}")
    if runtime == "auto":
        runtime = "onnxruntime" if channels_last and torch.device(device).type == "cpu" else "torch"
    clip = Clip(model, preprocess, tokenizer, digest[:16], str(source), channels_last, trunk_runtime=runtime)
    if feature_cache:
        clip.use_feature_cache(feature_cache)
    return clip


def clip_fingerprint(source: str | Path, weights: Optional[str | Path] = None) -> str:
    """The fingerprint :func:`load_clip` gives (config + weights), without loading the model."""
    src = Path(str(source))
    if src.is_dir():
        files = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin")) + sorted(src.glob("*.pt*"))
        if not (src / CONFIG_NAME).is_file() or not files:
            raise FileNotFoundError(f"CLIP directory {src} has no {CONFIG_NAME} or no weights file")
        return hashlib.sha256(((src / CONFIG_NAME).read_bytes() + sha256_file(files[0]).encode())).hexdigest()
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(f"open_clip architecture {source!r} needs a local weights file (got {weights!r})")
    return hashlib.sha256((str(source) + sha256_file(Path(weights))).encode()).hexdigest()


def calibrated_consistency(source: str | Path) -> Optional[float]:
    """The image-text consistency threshold ``ipl synth`` calibrated for this CLIP (None: none)."""
    path = Path(str(source)) / CONFIG_NAME
    if not path.is_file():
        return None
    value = ((json.loads(path.read_text()).get("ipl") or {}).get("consistency") or {}).get("threshold")
    return float(value) if value is not None else None


def _load_hf_text_dir(src: Path, meta: dict, weights: Path, device: str):
    """An open_clip model with a Hugging Face text tower named by a local path (no hub access)."""
    import copy

    import open_clip
    from open_clip.tokenizer import HFTokenizer

    cfg = copy.deepcopy(meta["model_cfg"])
    text = cfg["text_cfg"]
    where = Path(text["hf_model_name"])
    where = where if where.is_absolute() else src / where
    if not (where / "config.json").is_file():
        raise FileNotFoundError(f"CLIP directory {src}: text tower {text['hf_model_name']!r} is not a local Hugging "
                                f"Face model directory ({where / 'config.json'} missing; hub names are not fetched)")
    text["hf_model_name"] = str(where.resolve())
    text["hf_tokenizer_name"] = str(where.resolve())
    text["hf_model_pretrained"] = False  # the weights come from the CLIP's own file
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    cfg.pop("custom_text", None)
    model = open_clip.CustomTextCLIP(**cfg)
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"CLIP directory {src}: weights do not fit the config (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    model.to(device)
    pre = meta.get("preprocess_cfg") or {}
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False,
                                           mean=tuple(pre.get("mean", OPENAI_MEAN)), std=tuple(pre.get("std", OPENAI_STD)))
    tokenizer = HFTokenizer(str(where.resolve()), context_length=text.get("context_length", 77))
    return model, preprocess, tokenizer


def _conv_image_tower(model) -> bool:
    trunk = getattr(getattr(model, "visual", None), "trunk", None)
    return trunk is not None and any(isinstance(m, torch.nn.Conv2d) for m in trunk.modules())


def lock_towers(model, lock: dict) -> None:
    """Freeze the towers as ``lock`` says (``image_unlocked_groups`` / ``text_unlocked_layers``:
    trailing groups left trainable; absent: the tower is not locked)."""
    if "image_unlocked_groups" in lock and hasattr(model, "lock_image_tower"):
        model.lock_image_tower(unlocked_groups=int(lock["image_unlocked_groups"]))
    if "text_unlocked_layers" in lock and hasattr(model, "lock_text_tower"):
        model.lock_text_tower(unlocked_layers=int(lock["text_unlocked_layers"]), freeze_layer_norm=True)


@dataclass
class LitSplit:
    """A model whose towers are fully locked, split into frozen feature extractors and trained heads."""

    image_features: Callable  # pixels -> frozen features
    image_head: Callable  # frozen features -> embedding (trained)
    text_features: Callable  # tokens -> frozen pooled features
    text_head: Callable  # pooled features -> embedding (trained)


def lit_split(model) -> Optional[LitSplit]:
    """The split of an open_clip model with a locked timm trunk and a locked HF text transformer
    (None for any other model: it trains end to end)."""
    visual, text = getattr(model, "visual", None), getattr(model, "text", None)
    trunk, head = getattr(visual, "trunk", None), getattr(visual, "head", None)
    transformer = getattr(text, "transformer", None)
    if trunk is None or head is None or transformer is None or not hasattr(text, "pooler"):
        return None
    if any(p.requires_grad for p in trunk.parameters()) or any(p.requires_grad for p in transformer.parameters()):
        return None

    def text_features(tokens):
        mask = (tokens != text.config.pad_token_id).long()
        return text.pooler(transformer(input_ids=tokens, attention_mask=mask), mask)

    return LitSplit(trunk, head, text_features, text.proj)
