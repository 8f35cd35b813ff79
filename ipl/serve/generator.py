"""The Generator deployment: the paper's Table 2 prompt with the photos, streamed.

``Generator.stream(prompt, photos, language, max_new_tokens, blocked)`` is an async generator of
a first ``{"admitted": True}`` (sent as soon as a replica takes the draft: the ingress waits for
it before answering 200, so an overloaded Generator is a 503, never a broken stream), then
``{"text": chunk}`` items (what was decoded since the last item, as one) and a last
``{"finish_reason": "stop"|"length"|"cancelled", "tokens": n, "prompt_tokens": n}``. The photos
are the SafetyGate's pixels (no decode here). Backends:

* transformers (default, CPU and GPU): dynamic batching: concurrent requests share one
  ``model.generate`` (one forward pass per step for the whole batch, left-padded), each row
  streamed on its own; a per-row stopping criterion watches each request's cancel flag, so a
  client disconnect, an output-monitor halt or a timeout stops that row's decoding; each row's
  ``blocked`` values (:mod:`ipl.generate.guard`) are masked by a logits processor;
* vllm (``production.yaml``): vLLM's async engine (``AsyncLLM``) with the photos as
  ``multi_modal_data`` and ``blocked`` as ``SamplingParams.bad_words``; cancelling aborts
  the request in the engine.

``truncate_sentence(text, max_chars)`` cuts a capped description at its last sentence end.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from typing import AsyncIterator, Optional, Sequence

from ipl.generate.prompts import description_messages
from ipl.photos import counts, counts_since
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


def vlm_images(photos: Sequence, side: int) -> list:
    """Photos (the SafetyGate's pixels; encoded bytes are decoded) as RGB images with the longest
    side at most ``side`` (what the VLM is given)."""
    from ipl.photos import decode_photo

    out = []
    for p in photos:
        img = decode_photo(p).copy()
        img.thumbnail((side, side))
        out.append(img)
    return out


class _Job:
    """One request waiting for (or in) a batch: its inputs, its cancel flag and its event queue."""

    def __init__(self, messages, images, max_new_tokens, cancel, blocked, loop, queue):
        self.messages, self.images, self.max_new_tokens = messages, images, max_new_tokens
        self.cancel, self.blocked, self.loop, self.queue = cancel, blocked, loop, queue

    def send(self, item: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class TransformersBackend:
    """``model.generate`` on batches of concurrent requests (dynamic batching).

    One worker thread owns the model. A request is queued; when the model is free the worker
    takes the waiting requests (at most ``generate.max_batch``, waiting up to
    ``generate.batch_wait_ms`` for more to arrive), left-pads them into one batch and runs one
    greedy ``generate``: every decoding step is one forward pass for the whole batch. Each row
    streams its own text (a streamer splits the step's tokens by row), stops on its own (its
    EOS, its ``max_new_tokens`` or its cancel flag: a per-row stopping criterion) and has its
    own decode-time guard list (one :class:`~ipl.generate.guard.ValueGuard` row each). A request
    that arrives while a batch runs waits for the next one (vLLM, the GPU backend, batches
    continuously)."""

    def __init__(self, path, cfg: GenerateConfig):
        import queue

        import torch

        from ipl.models.vlm import load_vlm

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        self.vlm = load_vlm(path, dtype=dtype, device=cfg.device, hint="run `ipl train` or set models.vlm")
        self.cfg = cfg
        self._sequences: dict[str, list[list[int]]] = {}
        self._eos = _eos_ids(self.vlm)
        self._pending: "queue.Queue[_Job]" = queue.Queue()
        self.batches = {"batches": 0, "rows": 0, "max_rows": 0}
        self._worker = threading.Thread(target=self._loop, name="ipl-generate", daemon=True)
        self._worker.start()

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

    async def choose(self, messages: list[dict], images: list, choices: Sequence[str]) -> tuple[str, float]:
        """A closed-set answer (one forward pass; :func:`ipl.generate.local.choose_batch`)."""
        from ipl.generate.local import choose_batch

        return (await asyncio.to_thread(choose_batch, self.vlm, [(messages, images)], tuple(choices), 1))[0]

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        queue: asyncio.Queue = asyncio.Queue()
        self._pending.put(_Job(messages, images, max_new_tokens, cancel, list(blocked), asyncio.get_running_loop(),
                               queue))
        loop = asyncio.get_running_loop()
        interval = self.cfg.stream_interval_ms / 1000
        while True:
            item = await queue.get()
            if "text" in item:  # what is decoded within stream_interval_ms leaves as one item (each
                # streamed item is a message through Ray; one per token costs more than the token)
                deadline, last = loop.time() + interval, None
                while last is None:
                    remaining = deadline - loop.time()
                    if remaining <= 0 and queue.empty():
                        break
                    try:
                        nxt = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                    if "text" in nxt:
                        item = {"text": item["text"] + nxt["text"]}
                    else:
                        last = nxt
                yield item
                if last is None:
                    continue
                item = last
            yield item
            return

    # -- the worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        import queue
        import time

        while True:
            batch = [self._pending.get()]
            deadline = time.monotonic() + self.cfg.batch_wait_ms / 1000
            while len(batch) < self.cfg.max_batch:
                try:
                    batch.append(self._pending.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            live = []
            for job in batch:  # gone before it started: nothing to compute
                if job.cancel.is_set():
                    job.send({"finish_reason": "cancelled", "tokens": 0, "prompt_tokens": 0})
                else:
                    live.append(job)
            if live:
                self._run(live)

    def _run(self, jobs: list[_Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        from ipl.generate.guard import ValueGuard

        tok = self.vlm.processor.tokenizer
        n = len(jobs)
        tokens: list[list[int]] = [[] for _ in jobs]
        sent = [""] * n
        done = [False] * n
        eos = self._eos

        class _Rows(BaseStreamer):
            """Splits each step's (batch,) tokens by row and sends each row's new text."""

            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate first puts the prompt
                    self.prompt_seen = True
                    return
                for b, t in enumerate(value.reshape(-1).tolist()[:n]):
                    if done[b]:
                        continue
                    tokens[b].append(int(t))
                    if int(t) in eos:
                        done[b] = True
                        continue
                    text = tok.decode(tokens[b], skip_special_tokens=True)
                    if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                        continue
                    if len(text) > len(sent[b]) and text.startswith(sent[b]):
                        jobs[b].send({"text": text[len(sent[b]):]})
                        sent[b] = text

            def end(self):
                pass

        class _RowStop(StoppingCriteria):
            """Per row: cancelled, at its own token limit, or finished."""

            def __call__(self, input_ids, scores, **kwargs):
                flags = []
                for b, job in enumerate(jobs):
                    stop = done[b] or job.cancel.is_set() or len(tokens[b]) >= job.max_new_tokens
                    done[b] = done[b] or stop
                    flags.append(stop)
                return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

        previous = tok.padding_side
        try:
            tok.padding_side = "left"
            texts = [tok.apply_chat_template(j.messages, tokenize=False, add_generation_prompt=True) for j in jobs]
            images = [im for j in jobs for im in j.images]
            enc = self.vlm.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            enc = {k: v.to(self.vlm.model.device) for k, v in enc.items()}
            prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
            rows = [self.banned(j.blocked) for j in jobs]
            guard = ValueGuard(rows, enc["input_ids"].shape[1]) if any(rows) else None
            self.batches["batches"] += 1
            self.batches["rows"] += n
            self.batches["max_rows"] = max(self.batches["max_rows"], n)
            with torch.no_grad():
                self.vlm.model.generate(
                    **enc, max_new_tokens=max(j.max_new_tokens for j in jobs), do_sample=False, streamer=_Rows(),
                    stopping_criteria=StoppingCriteriaList([_RowStop()]),
                    logits_processor=LogitsProcessorList([guard]) if guard else None)
        except Exception as exc:  # noqa: BLE001 - reported to each caller as a stream error
            log.exception("generation failed")
            for b, job in enumerate(jobs):
                job.send({"error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            tok.padding_side = previous
        for b, job in enumerate(jobs):
            rest = tok.decode(tokens[b], skip_special_tokens=True)
            if len(rest) > len(sent[b]) and rest.startswith(sent[b]):  # a last held-back character
                job.send({"text": rest[len(sent[b]):]})
            if job.cancel.is_set():
                reason = "cancelled"
            elif len(tokens[b]) >= job.max_new_tokens and (not tokens[b] or tokens[b][-1] not in eos):
                reason = "length"
            else:
                reason = "stop"
            job.send({"finish_reason": reason, "tokens": len(tokens[b]), "prompt_tokens": int(prompt_tokens[b])})


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

    async def choose(self, messages: list[dict], images: list, choices: Sequence[str]) -> tuple[str, float]:
        """A closed-set answer: one token restricted to the choices' first tokens (``allowed_token_ids``)."""
        import math

        from vllm import SamplingParams

        first = {}
        for c in choices:
            for form in (c, c.capitalize(), " " + c):
                ids = self.tokenizer.encode(form, add_special_tokens=False)
                if ids:
                    first.setdefault(ids[0], c)
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        params = SamplingParams(temperature=0.0, max_tokens=1, allowed_token_ids=sorted(first),
                                logprobs=len(first))
        inputs = {"prompt": prompt, "multi_modal_data": {"image": images}} if images else {"prompt": prompt}
        final = None
        async for out in self.engine.generate(inputs, params, uuid.uuid4().hex):
            final = out.outputs[0]
        token = final.token_ids[0]
        mass: dict[str, float] = {}
        for tid, lp in ((final.logprobs or [{}])[0] or {}).items():
            if tid in first:
                mass[first[tid]] = mass.get(first[tid], 0.0) + math.exp(getattr(lp, "logprob", lp))
        total = sum(mass.values())
        return first[token], (mass.get(first[token], 0.0) / total if total else 1.0)

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        from vllm import SamplingParams

        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        request_id = uuid.uuid4().hex
        # the decode-time guard: vLLM bans each word with and without a leading space itself
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, bad_words=list(blocked) or None)
        inputs = {"prompt": prompt, "multi_modal_data": {"image": images}} if images else {"prompt": prompt}
        sent, final, prompt_ids = "", None, None
        try:
            async for out in self.engine.generate(inputs, params, request_id):
                prompt_ids = out.prompt_token_ids
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
               "tokens": len(final.token_ids) if final else 0, "prompt_tokens": len(prompt_ids or [])}


class Generator:
    """Serve deployment (plain class): the VLM behind the Table 2 prompt."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg.generate
        backend = VLLMBackend if self.cfg.backend == "vllm" else TransformersBackend
        self.backend = backend(cfg.vlm_dir, self.cfg)
        self.stats = {"active": 0, "completed": 0, "cancelled": 0, "failed": 0}
        self._base = counts()

    def get_stats(self) -> dict:
        return {**self.stats, **counts_since(self._base), **getattr(self.backend, "batches", {})}

    async def caption(self, photos: Sequence, category: Optional[str], keys: Sequence[str], language: str = "en",
                      max_new_tokens: int = 48, judge: bool = True) -> dict:
        """CASLIE's context-conditioned caption of the photos and, with ``judge``, the LLM judge's
        closed yes/no on it (the CQE prompt, same photos)."""
        from ipl.caption.prompts import caption_messages, caption_prompt, clean_caption, cqe_prompt

        photos = list(photos)[: self.cfg.max_photos]
        images = await asyncio.to_thread(vlm_images, photos, self.cfg.image_side)
        messages = caption_messages(len(images), caption_prompt(category, keys, language), language)
        cancel, text = threading.Event(), ""
        try:
            async for item in self.backend.stream(messages, images, min(max_new_tokens, self.cfg.max_new_tokens),
                                                  cancel, []):
                if "error" in item:
                    raise RuntimeError(f"caption generation failed: {item['error']}")
                text += item.get("text", "")
        finally:
            cancel.set()
        text = clean_caption(text)
        out = {"caption": text, "answer": None}
        if judge and text:
            choices = ("是", "否") if language == "zh" else ("yes", "no")
            said, p = await self.backend.choose(caption_messages(len(images), cqe_prompt(text, category, language),
                                                                 language), images, choices)
            out["answer"] = f"{said} (p={p:.3f})"
        return out

    async def stream(self, prompt: str, photos: Sequence, language: str = "en",
                     max_new_tokens: Optional[int] = None, blocked: Optional[Sequence[str]] = None
                     ) -> AsyncIterator[dict]:
        yield {"admitted": True}  # this replica has taken the draft: the ingress may now answer 200
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
