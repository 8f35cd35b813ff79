"""LLM attribute extraction as a batch-inference stage: transformers on CPU, vLLM on GPUs.

``make_extractor(cfg)`` returns an object with ``generate(list_of_messages) -> list[str]``:

* ``TransformersExtractor``: any local causal-LM or Qwen2-VL-family directory (text-only
  prompts), greedy decoding, batched with left padding;
* ``VLLMExtractor``: ``vllm.LLM(model=<local dir>)`` with ``SamplingParams(temperature=0)``
  and ``LLM.chat`` (vLLM's offline API); needs the ``gpu`` extra and a GPU.

The Ray Data stage (:class:`ipl.extract.stage.ExtractAttributes`) holds one per actor.
"""
from __future__ import annotations

import logging
from typing import Literal, Optional

import torch
from pydantic import Field

from ipl.config import Strict

log = logging.getLogger("ipl.extract")


class LLMConfig(Strict):
    """The extraction LLM (paper Table 3)."""

    backend: Literal["none", "transformers", "vllm", "serve_llm"] = Field(
        "none", description="none: gazetteer only; transformers: CPU/GPU; vllm: GPU batch inference (ipl prepare's "
        "actors); serve_llm: serving only, the Generator's Ray Serve LLMServer, asked asynchronously."
    )
    model: Optional[str] = Field(None, description="Local model directory (save_pretrained layout).")
    max_new_tokens: int = Field(96, ge=8, description="Tokens generated per listing.")
    batch_size: int = Field(16, ge=1, description="Listings per generate call.")
    concurrency: int = Field(1, ge=1, description="Extraction actors.")
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per extraction actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per extraction actor.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM GPU memory share.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    params_b: Optional[float] = Field(None, gt=0, description="Parameters in billions, for the offline GPU memory "
                                      "check (null: counted from the model directory when it is present).")


class TransformersExtractor:
    def __init__(self, cfg: LLMConfig):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        from ipl.devices import placement_device, resolve_dtype
        from ipl.models.vlm import require_local_dir

        path = require_local_dir(cfg.model, "extraction LLM")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        auto = AutoModelForImageTextToText if getattr(config, "vision_config", None) else AutoModelForCausalLM
        device = placement_device("auto", cfg.num_gpus or None)  # the actor's/replica's GPU when it has one
        dtype = getattr(torch, resolve_dtype(cfg.dtype, device))
        self.model = auto.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.cfg = cfg

    @torch.no_grad()
    def generate(self, conversations: list[list[dict]]) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        out: list[str] = []
        for i in range(0, len(prompts), self.cfg.batch_size):
            enc = self.tokenizer(prompts[i : i + self.cfg.batch_size], return_tensors="pt",
                                 padding=True).to(self.model.device)
            gen = self.model.generate(**enc, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


class VLLMExtractor:  # pragma: no cover - needs a GPU and the gpu extra
    def __init__(self, cfg: LLMConfig):
        from vllm import LLM, SamplingParams

        from ipl.models.vlm import require_local_dir

        path = require_local_dir(cfg.model, "extraction LLM")
        self.llm = LLM(model=str(path), tensor_parallel_size=cfg.tensor_parallel_size,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, dtype=cfg.dtype)
        self.params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens)

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        outputs = self.llm.chat(conversations, self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def make_extractor(cfg: LLMConfig):
    if cfg.backend == "serve_llm":
        from ipl.config import ConfigError

        raise ConfigError("llm.backend=serve_llm exists in serving only (the Generator's LLMServer); batch jobs use "
                          "transformers or vllm")
    if cfg.backend == "transformers":
        return TransformersExtractor(cfg)
    if cfg.backend == "vllm":
        return VLLMExtractor(cfg)
    return None
