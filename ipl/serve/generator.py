"""The Generator deployment: the paper's Table 2 prompt with the photos, streamed.

``Generator.stream(prompt, photos, language, max_new_tokens, blocked)`` is an async generator of
``{"text": chunk}`` items and a last ``{"finish_reason": "stop"|"length"|"cancelled",
"tokens": n}``. Backends:

* transformers (default, CPU and GPU): ``model.generate`` in a thread with a text
  streamer feeding an asyncio queue; a stopping criterion watches a cancel flag, so a
  client disconnect, an output-monitor halt or a timeout stops the decoding loop itself; the
  ``blocked`` values (:mod:`ipl.generate.guard`) are masked by a logits processor;
* vllm (``production.yaml``): vLLM's async engine (``AsyncLLM``) with the photos as
  ``multi_modal_data`` and ``blocked`` as ``SamplingParams.bad_words``; cancelling aborts
  the request in the engine.

``truncate_sentence(text, max_chars)`` cuts a capped description at its last sentence end.
"""
from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
import uuid
from typing import AsyncIterator, Optional, Sequence

from ipl.generate.prompts import description_messages
from ipl.serve.config import GenerateConfig, ServeConfig

log = logging.getLogger("ipl.serve")
_SENTENCE_END = re.compile(r"[.!?。！？…](?=\s|$)|[。！？]")


def truncate_sentence(text: str, max_chars: int) -> str:
    """``text`` if it fits, else cut at the last sentence end within ``max_chars`` (else at a word)."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= max_chars // 3:
        return head[: ends[-1]].strip()
    space = head.rfind(" ")
    return (head[:space] if space > max_chars // 3 else head).rstrip(" ,;:") + "…"


def vlm_images(photos: Sequence[bytes], side: int) -> list:
    """Photos as RGB images with the longest side at most ``side`` (what the VLM is given)."""
    from PIL import Image

    out = []
    for p in photos:
        img = Image.open(io.BytesIO(p)).convert("RGB")
        img.thumbnail((side, side))
        out.append(img)
    return out


class TransformersBackend:
    def __init__(self, path, cfg: GenerateConfig):
        import torch

        from ipl.models.vlm import load_vlm

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        self.vlm = load_vlm(path, dtype=dtype, device=cfg.device, hint="run `ipl train` or set models.vlm")
        self.cfg = cfg
        self._sequences: dict[str, list[list[int]]] = {}

    def banned(self, blocked: Sequence[str]) -> list[list[int]]:
        """Token sequences of the blocked values (each value's spellings tokenized once, then cached)."""
        from ipl.generate.guard import token_sequences

        out = []
        for value in blocked:
            if value not in self._sequences:
                if len(self._sequences) > 100_000:
                    self._sequences.clear()
                self._sequences[value] = token_sequences(self.vlm.processor.tokenizer, [value])
            out += self._sequences[value]
        return out

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextStreamer

        from ipl.generate.guard import ValueGuard

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        tok = self.vlm.processor.tokenizer

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False):
                if text:
                    loop.call_soon_threadsafe(queue.put_nowait, {"text": text})

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        def run():
            result: dict = {"finish_reason": "stop", "tokens": 0}
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                enc = self.vlm.processor(text=[text], images=images or None, return_tensors="pt")
                enc = {k: v.to(self.vlm.model.device) for k, v in enc.items()}
                guard = ValueGuard([self.banned(blocked)], enc["input_ids"].shape[1]) if blocked else None
                with torch.no_grad():
                    out = self.vlm.model.generate(
                        **enc, max_new_tokens=max_new_tokens, do_sample=False,
                        streamer=_Streamer(tok, skip_prompt=True, skip_special_tokens=True),
                        stopping_criteria=StoppingCriteriaList([_Cancel()]),
                        logits_processor=LogitsProcessorList([guard]) if guard else None)
                new = out[0, enc["input_ids"].shape[1]:]
                result["tokens"] = int(new.shape[0])
                if cancel.is_set():
                    result["finish_reason"] = "cancelled"
                elif result["tokens"] >= max_new_tokens and int(new[-1]) not in _eos_ids(self.vlm):
                    result["finish_reason"] = "length"
            except Exception as exc:  # noqa: BLE001 - reported to the caller as a stream error
                log.exception("generation failed")
                result = {"error": f"{type(exc).__name__}: {exc}"}
            loop.call_soon_threadsafe(queue.put_nowait, result)

        thread = threading.Thread(target=run, name="ipl-generate", daemon=True)
        thread.start()
        while True:
            item = await queue.get()
            yield item
            if "text" not in item:
                return


def _eos_ids(vlm) -> set[int]:
    ids = vlm.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return {int(i) for i in ids if i is not None} | {vlm.processor.tokenizer.eos_token_id}


class VLLMBackend:  # pragma: no cover - needs a GPU and the gpu extra
    def __init__(self, path, cfg: GenerateConfig):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:
            from vllm import AsyncLLMEngine as Engine
        args = AsyncEngineArgs(model=str(path), dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                               gpu_memory_utilization=cfg.gpu_memory_utilization,
                               tensor_parallel_size=cfg.tensor_parallel_size,
                               limit_mm_per_prompt={"image": cfg.max_photos})
        self.engine = Engine.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        from vllm import SamplingParams

        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        request_id = uuid.uuid4().hex
        # the decode-time guard: vLLM bans each word with and without a leading space itself
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, bad_words=list(blocked) or None)
        inputs = {"prompt": prompt, "multi_modal_data": {"image": images}} if images else {"prompt": prompt}
        sent, final = "", None
        try:
            async for out in self.engine.generate(inputs, params, request_id):
                if cancel.is_set():
                    await self.engine.abort(request_id)
                    yield {"finish_reason": "cancelled", "tokens": len(final.token_ids) if final else 0}
                    return
                final = out.outputs[0]
                if final.text[len(sent):]:
                    yield {"text": final.text[len(sent):]}
                    sent = final.text
        except asyncio.CancelledError:
            await self.engine.abort(request_id)
            raise
        yield {"finish_reason": (final.finish_reason if final else "stop") or "stop",
               "tokens": len(final.token_ids) if final else 0}


class Generator:
    """Serve deployment (plain class): the VLM behind the Table 2 prompt."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg.generate
        backend = VLLMBackend if self.cfg.backend == "vllm" else TransformersBackend
        self.backend = backend(cfg.vlm_dir, self.cfg)
        self.stats = {"active": 0, "completed": 0, "cancelled": 0, "failed": 0}

    def get_stats(self) -> dict:
        return dict(self.stats)

    async def stream(self, prompt: str, photos: Sequence[bytes], language: str = "en",
                     max_new_tokens: Optional[int] = None, blocked: Optional[Sequence[str]] = None
                     ) -> AsyncIterator[dict]:
        photos = list(photos)[: self.cfg.max_photos]
        images = await asyncio.to_thread(vlm_images, photos, self.cfg.image_side)
        messages = description_messages(len(images), prompt, language)
        limit = min(max_new_tokens or self.cfg.max_new_tokens, self.cfg.max_new_tokens)
        cancel = threading.Event()
        self.stats["active"] += 1
        outcome = "cancelled"
        try:
            async for item in self.backend.stream(messages, images, limit, cancel, list(blocked or ())):
                if "error" in item:
                    outcome = "failed"
                elif "finish_reason" in item and item["finish_reason"] != "cancelled":
                    outcome = "completed"
                yield item
        finally:  # a closed stream (client gone, halt, timeout) lands here: stop decoding
            cancel.set()
            self.stats["active"] -= 1
            self.stats[outcome] += 1
