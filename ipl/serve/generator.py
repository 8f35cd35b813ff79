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
* serve_llm (``production.yaml``): Ray Serve LLM's ``LLMServer`` (vLLM on GPUs) through a
  deployment handle, chat messages with the photos as data URLs and ``blocked`` as vLLM's
  ``bad_words``; cancelling the handle's response aborts the request in the engine
  (:mod:`ipl.serve.llm_server`).

Photos follow the model's image policy (:class:`ipl.config.ImagePolicy`, read from the model
directory: what it was trained with), and a prompt whose photos would not fit the context
(``generate.max_model_len`` less the tokens to generate) loses photos from the end, the rule
training uses (:func:`ipl.photos.photos_that_fit`).

``truncate_sentence(text, max_chars)`` cuts a capped description at its last sentence end.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import AsyncIterator, Optional, Sequence

from ipl.generate.prompts import description_messages
from ipl.generate.repetition import Repeats
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


def vlm_images(photos: Sequence, policy) -> list:
    """Photos (the SafetyGate's pixels; encoded bytes are decoded) as the RGB images the VLM is
    given under the image ``policy`` (the first ``max_photos``, each sized as in training)."""
    from ipl.photos import fit_photos

    return fit_photos(photos, policy)


def fit_context(tokenizer, build, images: list, max_tokens: int) -> tuple[list[dict], list]:
    """(messages, images) with photos dropped from the end until the prompt fits ``max_tokens``
    (``build(n)`` makes the messages for ``n`` photos)."""
    from ipl.photos import photos_within

    messages = build(len(images))
    if not images or tokenizer is None:
        return messages, images
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    keep = photos_within(tokenizer, text, images, max_tokens)
    if keep < len(images):
        images = images[:keep]
        messages = build(keep)
    return messages, images


async def coalesced(queue: asyncio.Queue, interval: float) -> AsyncIterator[dict]:
    """The items of ``queue`` until the last one (a dict without ``text``), text joined so that one
    item leaves at most every ``interval`` seconds: each streamed item is a message through Ray
    and the proxy, and one per token costs more than the token. The first text leaves at once
    (what was decoded already comes with it), so the time to the first text pays no interval."""
    loop = asyncio.get_running_loop()
    sent: Optional[float] = None
    while True:
        item = await queue.get()
        if "text" not in item:
            yield item
            return
        deadline, last = (loop.time() if sent is None else sent + interval), None
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
        sent = loop.time()
        if last is not None:
            yield last
            return


class _Job:
    """One request waiting for (or in) a batch: its inputs, its cancel flag and its event queue."""

    def __init__(self, messages, images, max_new_tokens, cancel, blocked, loop, queue):
        self.messages, self.images, self.max_new_tokens = messages, images, max_new_tokens
        self.cancel, self.blocked, self.loop, self.queue = cancel, blocked, loop, queue

    def send(self, item: dict) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's event loop is gone (it closed the stream and ended): nobody to tell
            pass


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

        from ipl.devices import needs_probe, placement_device, probe_vlm, resolve_dtype
        from ipl.models.vlm import load_vlm

        device = placement_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, device)
        self.vlm = load_vlm(path, dtype=getattr(torch, self.dtype), device=device,
                            hint="run `ipl train` or set models.vlm")
        if needs_probe(self.dtype, device):  # fp16 on a GPU: refuse to serve NaNs
            probe_vlm(self.vlm, self.dtype, f"VLM {path}")
        self.cfg = cfg
        from ipl.generate.guard import TokenSequences

        self._sequences = TokenSequences(self.vlm.processor.tokenizer)  # each blocked value tokenized once
        self._eos = _eos_ids(self.vlm)
        self._pending: "queue.Queue[_Job]" = queue.Queue()
        self.batches = {"batches": 0, "rows": 0, "max_rows": 0}
        self._worker = threading.Thread(target=self._loop, name="ipl-generate", daemon=True)
        self._worker.start()

    def banned(self, blocked: Sequence) -> list[list[int]]:
        """Token sequences of the blocked values and words (:mod:`ipl.generate.guard`; each
        tokenized once, then cached)."""
        return self._sequences(blocked)

    async def choose(self, messages: list[dict], images: list, choices: Sequence[str]) -> tuple[str, float]:
        """A closed-set answer (one forward pass; :func:`ipl.generate.local.choose_batch`)."""
        from ipl.generate.local import choose_batch

        return (await asyncio.to_thread(choose_batch, self.vlm, [(messages, images)], tuple(choices), 1))[0]

    async def stream(self, messages: list[dict], images: list, max_new_tokens: int,
                     cancel: threading.Event, blocked: Sequence[str] = ()) -> AsyncIterator[dict]:
        queue: asyncio.Queue = asyncio.Queue()
        self._pending.put(_Job(messages, images, max_new_tokens, cancel, list(blocked), asyncio.get_running_loop(),
                               queue))
        async for item in coalesced(queue, self.cfg.stream_interval_ms / 1000):
            yield item

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
                    logits_processor=LogitsProcessorList([guard]) if guard else None,
                    **({"suppress_tokens": sorted(eos)} if self.cfg.ignore_eos else {}))
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


class Generator:
    """Serve deployment (plain class): the VLM behind the Table 2 prompt."""

    def __init__(self, cfg: ServeConfig, llm=None):
        from ipl.models.vlm import capped_policy, image_policy_of

        self.cfg = cfg.generate
        if self.cfg.backend == "serve_llm":
            from ipl.serve.llm_server import ServeLLMBackend

            if llm is None:
                raise ValueError("generate.backend=serve_llm needs the LLMServer handle (ipl.serve.app.build binds it)")
            self.backend = ServeLLMBackend(cfg.vlm_dir, self.cfg, llm)
            self.tokenizer = self.backend.tokenizer
            policy = image_policy_of(cfg.vlm_dir)
        else:
            self.backend = TransformersBackend(cfg.vlm_dir, self.cfg)
            self.tokenizer = self.backend.vlm.processor.tokenizer
            policy = self.backend.vlm.images
        self.images = capped_policy(policy, self.cfg.max_photos)  # the model's policy (what it was trained with)
        self.stats = {"active": 0, "completed": 0, "cancelled": 0, "failed": 0, "loops_ended": 0}
        self._base = counts()
        # float16 behind the LLMServer: checked for finite logits before the first draft (the
        # transformers backend probes at load, ipl.devices.probe_vlm)
        self._probe = None
        self._probe_error: Optional[str] = None

    async def _checked(self) -> None:
        if self.cfg.backend != "serve_llm" or self.cfg.dtype != "float16":
            return
        if self._probe is None:
            self._probe = asyncio.ensure_future(self.backend.probe())
        try:
            await asyncio.shield(self._probe)
        except Exception as exc:  # noqa: BLE001 - kept and reported to every request
            self._probe_error = f"{type(exc).__name__}: {exc}"
            raise

    async def check_health(self) -> None:
        """Serve's health check: unhealthy (and saying why) when the precision probe failed."""
        if self._probe_error:
            raise RuntimeError(self._probe_error)

    def _inputs(self, photos: Sequence, build, max_new_tokens: int) -> tuple[list[dict], list]:
        images = vlm_images(photos, self.images)
        return fit_context(self.tokenizer, build, images, self.cfg.max_model_len - max_new_tokens)

    def get_stats(self) -> dict:
        return {**self.stats, **counts_since(self._base), **getattr(self.backend, "batches", {})}

    async def caption(self, photos: Sequence, category: Optional[str], keys: Sequence[str], language: str = "en",
                      max_new_tokens: int = 48, judge: bool = True) -> dict:
        """CASLIE's context-conditioned caption of the photos and, with ``judge``, the LLM judge's
        closed yes/no on it (the CQE prompt, same photos)."""
        from ipl.caption.prompts import caption_messages, caption_prompt, clean_caption, cqe_prompt

        limit = min(max_new_tokens, self.cfg.max_new_tokens)
        prompt = caption_prompt(category, keys, language)
        messages, images = await asyncio.to_thread(self._inputs, photos,
                                                   lambda n: caption_messages(n, prompt, language), limit)
        cancel, text = threading.Event(), ""
        try:
            async for item in self.backend.stream(messages, images, limit, cancel, []):
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

    async def _repeats_out(self, items: AsyncIterator[dict], cancel: threading.Event) -> AsyncIterator[dict]:
        """The backend's items with the description's repeats taken out (:mod:`ipl.generate.repetition`):
        text goes on as its edit grows, each text item and the last one carry ``repetition`` (clauses
        removed, runs collapsed, ended); at a loop decoding stops here, where the tokens are counted
        (with ``ignore_eos`` it goes on, the text after the loop left out), and the row finishes as
        ``stop``."""
        repeats, raw, sent = Repeats(), "", ""

        def state() -> dict:
            return {"removed": len(repeats.removed), "collapsed": repeats.collapsed, "ended": repeats.ended}
        async for item in items:
            if "text" in item:
                if repeats.ended:
                    continue
                raw += item["text"]
                edited = repeats.feed(raw)
                if repeats.ended and not self.cfg.ignore_eos:
                    cancel.set()
                if len(edited) > len(sent):
                    yield {"text": edited[len(sent):], "repetition": state()}
                    sent = edited
                continue
            if "finish_reason" in item:
                final = repeats.finish(raw)
                if len(final) > len(sent):  # the last clause and the closing punctuation held back
                    yield {"text": final[len(sent):], "repetition": state()}
                item = {**item, "repetition": state()}
                if repeats.ended:
                    self.stats["loops_ended"] += 1
                    if item["finish_reason"] == "cancelled":  # stopped at its loop (a caller gone reads nothing)
                        item["finish_reason"] = "stop"
            yield item

    async def stream(self, prompt: str, photos: Sequence, language: str = "en",
                     max_new_tokens: Optional[int] = None, blocked: Optional[Sequence[str]] = None
                     ) -> AsyncIterator[dict]:
        await self._checked()  # a failed precision probe is an error before the 200, never a broken stream
        yield {"admitted": True}  # this replica has taken the draft: the ingress may now answer 200
        limit = min(max_new_tokens or self.cfg.max_new_tokens, self.cfg.max_new_tokens)
        messages, images = await asyncio.to_thread(self._inputs, photos,
                                                   lambda n: description_messages(n, prompt, language), limit)
        cancel = threading.Event()
        self.stats["active"] += 1
        outcome = "cancelled"
        items = self.backend.stream(messages, images, limit, cancel, list(blocked or ()))
        try:
            async for item in (self._repeats_out(items, cancel) if self.cfg.repeats else items):
                if "error" in item:
                    outcome = "failed"
                elif "finish_reason" in item and item["finish_reason"] != "cancelled":
                    outcome = "completed"
                yield item
        finally:  # a closed stream (client gone, halt, timeout) lands here: stop decoding
            cancel.set()
            self.stats["active"] -= 1
            self.stats[outcome] += 1
