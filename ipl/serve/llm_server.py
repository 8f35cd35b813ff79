"""Generation on GPUs through Ray Serve LLM (``generate.backend: serve_llm``).

``ray.serve.llm``'s ``LLMServer`` (vLLM's engine, continuous batching, tensor parallelism placed
by Ray, its own autoscaling and engine metrics) serves the fine-tuned VLM. The draft graph keeps
everything that makes a draft trustworthy in its own deployments -- prompt building, the
decode-time value guard (sent as vLLM's ``bad_words``), the output monitor, cancellation -- and
asks the LLMServer through a deployment handle with OpenAI chat messages, the photos as
``data:image/jpeg;base64`` URLs sized by the model's image policy.

* :func:`llm_config_dict` / :func:`llm_config` -- the ``LLMConfig`` built from a
  :class:`~ipl.serve.config.ServeConfig` (``generate`` + ``deployments.llm``), validated by Ray's
  own class; the test suite validates ``serve_configs/production.yaml`` with it on a machine
  without vLLM or a GPU.
* :func:`build_llm_app` -- ``build_llm_deployment(llm_config(cfg))``, bound into the graph by
  :func:`ipl.serve.app.build` and given to the Generator (and, with
  ``extract.llm.backend=serve_llm``, to the AttributeExtractor: one copy of the weights).
* :func:`chat_messages` / :func:`chat_request` / :func:`read_stream_chunk` -- the OpenAI wire
  format both ways, pure functions (unit-tested here).
* :class:`ServeLLMBackend` -- the Generator's backend over the handle (``stream``, ``choose``).

What the hand-rolled vLLM wrapper did that this path does through the LLMServer instead: the
engine arguments (``engine_kwargs``), the image limit (``limit_mm_per_prompt``), the processor's
pixel bounds (``mm_processor_kwargs``), aborting a cancelled request (Serve cancels the
replica's generator when the handle's response is cancelled; the LLMServer aborts it in the
engine), the closed yes/no of the CQE judge (``allowed_token_ids`` + ``top_logprobs``).
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Sequence

log = logging.getLogger("ipl.serve")


def _policy(cfg):
    from ipl.config import ImagePolicy
    from ipl.models.vlm import image_policy_of

    try:
        return image_policy_of(cfg.vlm_dir)
    except (OSError, ValueError):  # the production model dir is not on this machine: the defaults
        return ImagePolicy()


def llm_config_dict(cfg) -> dict:
    """The ``LLMConfig`` fields for ``cfg`` (a ServeConfig with ``generate.backend=serve_llm``)."""
    g, d = cfg.generate, cfg.deployments.llm
    policy = _policy(cfg)
    photos = min(policy.max_photos, g.max_photos or policy.max_photos)
    engine = {"dtype": g.dtype, "max_model_len": g.max_model_len, "gpu_memory_utilization": g.gpu_memory_utilization,
              "tensor_parallel_size": g.tensor_parallel_size, "limit_mm_per_prompt": {"image": max(1, photos)},
              "mm_processor_kwargs": {"min_pixels": policy.min_pixels, "max_pixels": policy.max_pixels},
              **g.engine_kwargs}
    deployment: dict[str, Any] = {"max_ongoing_requests": d.max_ongoing_requests,
                                  "max_queued_requests": d.max_queued_requests}
    if d.autoscaling is not None:
        deployment["autoscaling_config"] = dict(d.autoscaling)
    else:
        deployment["num_replicas"] = d.num_replicas or 1
    out = {"model_loading_config": {"model_id": g.served_model_name, "model_source": str(cfg.vlm_dir)},
           "engine_kwargs": engine, "deployment_config": deployment,
           "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}}}
    if d.accelerator_type:
        out["accelerator_type"] = d.accelerator_type
    return out


def llm_config_class():
    """Ray's ``LLMConfig``: the public ``ray.serve.llm`` one, which needs vLLM installed; without it
    the same class from Ray's internals (``ray.serve.llm.LLMConfig`` subclasses it and adds nothing),
    enough to validate a config on a machine without vLLM."""
    try:
        from ray.serve.llm import LLMConfig
    except ImportError:
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    return LLMConfig


def llm_config(cfg):
    """``cfg``'s LLMConfig, validated by Ray (a ValueError naming the field when it is wrong)."""
    return llm_config_class()(**llm_config_dict(cfg))


def build_llm_app(cfg):  # pragma: no cover - needs vLLM (the gpu extra)
    from ray.serve.llm import build_llm_deployment

    return build_llm_deployment(llm_config(cfg), name_prefix="ipl-")


# -- the OpenAI wire format ---------------------------------------------------------------------------
def data_url(img) -> str:
    """A PIL image as a JPEG data URL (quality 92: what the photo policy sized, not re-compressed hard)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(messages: list[dict], images: Sequence) -> list[dict]:
    """The processor-style messages (``{"type": "image"}`` placeholders) as OpenAI chat messages
    with the photos, in order, as ``image_url`` parts."""
    out, it = [], iter(images)
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        parts = []
        for p in content:
            if p.get("type") == "image":
                img = next(it, None)
                if img is None:
                    raise ValueError("more image placeholders than photos")
                parts.append({"type": "image_url", "image_url": {"url": data_url(img)}})
            else:
                parts.append({"type": "text", "text": p.get("text", "")})
        out.append({"role": m["role"], "content": parts})
    if next(it, None) is not None:
        raise ValueError("more photos than image placeholders")
    return out


def chat_request(model: str, messages: list[dict], images: Sequence, max_tokens: int, stream: bool = True,
                 bad_words: Sequence[str] = (), allowed_token_ids: Optional[Sequence[int]] = None,
                 top_logprobs: int = 0, ignore_eos: bool = False) -> dict:
    """The body of a greedy chat completion (vLLM's extra sampling fields included)."""
    body: dict[str, Any] = {"model": model, "messages": chat_messages(messages, images), "max_tokens": max_tokens,
                            "temperature": 0.0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if bad_words:  # vLLM bans each as written, with and without a leading space
        body["bad_words"] = [b if isinstance(b, str) else str(b[0]) for b in bad_words]
    if allowed_token_ids:
        body["allowed_token_ids"] = list(allowed_token_ids)
    if top_logprobs:
        body["logprobs"], body["top_logprobs"] = True, top_logprobs
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's sampling extra: decode to max_tokens
    return body


def read_stream_chunk(chunk) -> list[dict]:
    """One item the LLMServer streams (a list of ``data: {json}`` strings, one string, a response
    object or an ErrorResponse) as our stream items: ``{"text"}``, ``{"finish_reason", "tokens",
    "prompt_tokens"}`` from the usage, ``{"error"}``."""
    items = chunk if isinstance(chunk, list) else [chunk]
    out: list[dict] = []
    for item in items:
        if hasattr(item, "model_dump"):
            item = item.model_dump()
        if isinstance(item, (bytes, bytearray)):
            item = item.decode("utf-8")
        if isinstance(item, str):
            events = []
            for line in item.splitlines():
                line = line.strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data and data != "[DONE]":
                    events.append(json.loads(data))
        else:
            events = [item]
        for ev in events:
            if not isinstance(ev, dict):
                continue
            if "error" in ev or ev.get("object") == "error":
                err = ev.get("error") if isinstance(ev.get("error"), dict) else ev
                out.append({"error": str(err.get("message") or err)})
                continue
            for choice in ev.get("choices") or []:
                delta = choice.get("delta") or choice.get("message") or {}
                if delta.get("content"):
                    out.append({"text": delta["content"]})
                if choice.get("finish_reason"):
                    out.append({"finish_reason": choice["finish_reason"]})
            usage = ev.get("usage")
            if usage:
                out.append({"usage": {"tokens": int(usage.get("completion_tokens") or 0),
                                      "prompt_tokens": int(usage.get("prompt_tokens") or 0)}})
    return out


class ServeLLMBackend:  # pragma: no cover - the handle needs a running LLMServer (vLLM on a GPU)
    """The Generator's backend over the LLMServer's deployment handle."""

    def __init__(self, path: Path, cfg, handle):
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.handle = handle
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    @staticmethod
    def _request(body: dict):
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        return ChatCompletionRequest(**body)

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        body = chat_request(self.cfg.served_model_name, messages, images, max_new_tokens, True, blocked,
                            ignore_eos=self.cfg.ignore_eos)
        response = self.handle.options(stream=True).chat.remote(self._request(body))
        finish, usage = "stop", {"tokens": 0, "prompt_tokens": 0}
        try:
            async for chunk in response:
                if cancel.is_set():
                    response.cancel()  # Serve cancels the replica's generator: the engine aborts the request
                    yield {"finish_reason": "cancelled", **usage}
                    return
                for item in read_stream_chunk(chunk):
                    if "text" in item or "error" in item:
                        yield item
                    elif "finish_reason" in item:
                        finish = item["finish_reason"]
                    elif "usage" in item:
                        usage = item["usage"]
        except asyncio.CancelledError:
            response.cancel()
            raise
        yield {"finish_reason": finish, **usage}

    async def probe(self) -> None:
        """The precision policy's start-up check for float16 (V100 class): one greedy token on a
        probe prompt with a grey photo; :class:`~ipl.devices.PrecisionError` unless its logprobs
        are finite."""
        from PIL import Image

        from ipl.devices import PrecisionError

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this item."}]}]
        body = chat_request(self.cfg.served_model_name, messages, [Image.new("RGB", (224, 224), (128, 128, 128))],
                            1, False, top_logprobs=5)
        data = await first_response(self.handle, self._request(body))
        entries = ((data["choices"][0].get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
        values = [e.get("logprob") for e in entries]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise PrecisionError(f"LLMServer in {self.cfg.dtype}: the start-up probe's logprobs are not finite "
                                 f"({values}): fp16 overflow; serve in bfloat16 on a GPU that has it (A100/A10G/L4/"
                                 "H100) or in float32")

    async def choose(self, messages: list[dict], images: list, choices: Sequence[str]) -> tuple[str, float]:
        """A closed-set answer: one token among the choices' first tokens, its share of their mass."""
        first: dict[int, str] = {}
        for c in choices:
            for form in (c, c.capitalize(), " " + c):
                ids = self.tokenizer.encode(form, add_special_tokens=False)
                if ids:
                    first.setdefault(ids[0], c)
        body = chat_request(self.cfg.served_model_name, messages, images, 1, False,
                            allowed_token_ids=sorted(first), top_logprobs=min(20, len(first)))
        data = await first_response(self.handle, self._request(body))
        choice = data["choices"][0]
        said = (choice.get("message") or {}).get("content") or ""
        mass: dict[str, float] = {}
        for entry in ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []:
            for tid, c in first.items():
                if self.tokenizer.decode([tid]) == entry.get("token"):
                    mass[c] = mass.get(c, 0.0) + math.exp(entry.get("logprob", -math.inf))
        answer = next((c for c in choices if said.strip().lower().startswith(c.lower())), choices[0])
        total = sum(mass.values())
        return answer, (mass.get(answer, 0.0) / total if total else 1.0)


async def first_response(handle, request) -> dict:  # pragma: no cover - needs the LLMServer
    """A non-streaming chat answer as a dict: ``LLMServer.chat`` is a generator method (Serve calls it
    with ``stream=True``) that yields the one ChatCompletionResponse (or an ErrorResponse)."""
    async for item in handle.options(stream=True).chat.remote(request):
        data = item.model_dump() if hasattr(item, "model_dump") else item
        if isinstance(data, list):
            data = data[0] if data else {}
        if isinstance(data, dict) and ("error" in data or data.get("object") == "error"):
            err = data.get("error") if isinstance(data.get("error"), dict) else data
            raise RuntimeError(f"LLMServer: {err.get('message') or err}")
        return data
    raise RuntimeError("LLMServer: empty response")


async def extract_chat(handle, model: str, conversations: list[list[dict]], max_tokens: int) -> list[str]:
    """The extractor's Table 3 prompts through the LLMServer, concurrently and asynchronously (the
    engine batches them; no thread ever calls an engine)."""  # pragma: no cover - needs the LLMServer
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    async def one(conv):
        body = {"model": model, "messages": conv, "max_tokens": max_tokens, "temperature": 0.0, "stream": False}
        data = await first_response(handle, ChatCompletionRequest(**body))
        return ((data.get("choices") or [{}])[0].get("message") or {}).get("content") or ""

    return list(await asyncio.gather(*(one(c) for c in conversations)))
