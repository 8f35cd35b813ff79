"""The FastAPI ingress: HTTP parsing, limits, admission, JSON/SSE replies, the seller page.

Routes (:func:`build_api`, evaluated on each ingress replica; ``app.py`` wraps :class:`Ingress`
with ``serve.ingress(build_api)``, and each route calls the replica's Ingress object):

* ``POST /v1/listings/draft``: multipart ``photos`` (1..N files) and optional ``category``,
  ``language`` (en|zh), ``stream`` (true|false), ``max_new_tokens``, ``confirmed`` (a JSON
  object attribute -> value the seller confirmed: facts with basis ``seller``). JSON reply,
  or Server-Sent Events ``meta``, ``delta``..., then ``done`` | ``halted`` | ``error``.
* ``POST /v1/chat/completions``: OpenAI-compatible; the photos are the ``image_url``
  data-URL parts of the messages (remote URLs are refused: the service fetches nothing);
  extra fields ``category``, ``language`` and ``confirmed`` (an object) as above.
* ``GET /healthz`` (with the index's evidence tiers, enabled and disabled), ``GET /v1/stats``, ``GET /`` (seller page).

Every error is ``{"error": {"code", "message"}}`` with a 4xx/5xx status. Admission:
past ``pipeline.max_inflight`` drafts a replica answers 503 ``overloaded`` at once; a
downstream deployment's full queue (``max_queued_requests``) is also a 503, never a hang.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ipl.catalog.templates import load_levels, load_templates
from ipl.serve.config import ServeConfig
from ipl.serve.confirm import parse_confirmed
from ipl.serve.errors import ApiError
from ipl.serve.intake import check_photo_count
from ipl.serve.pipeline import DraftPipeline, DraftRequest

log = logging.getLogger("ipl.serve")
DRAFT_FIELDS = {"photos", "category", "language", "stream", "max_new_tokens", "confirmed", "notes"}
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "malformed_request")
    return JSONResponse({"error": {"code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}},
                        status_code=exc.status_code)


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _call(response):
    """Await a DeploymentResponse; when the caller gives up (a stage timeout), cancel the request in
    the replica too, so its work stops rather than running on."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


class HandleStages:
    """The pipeline's stages as Ray Serve deployment handles."""

    def __init__(self, safety, perception, extractor, generator, local_extractor=None):
        self.safety, self.perception = safety, perception
        self.extractor, self.generator = extractor, generator
        self.local_extractor = local_extractor  # the offline extractor, called in this process

    def check_stream(self, photos):
        return self.safety.options(stream=True).check_stream.remote(photos)

    async def perceive(self, images, category=None, vectors=None, fingerprint=None):
        return await _call(self.perception.perceive.remote(images, category, vectors, fingerprint))

    async def extract(self, category, keys, hits, language):
        if self.local_extractor is not None:
            return await self.local_extractor.extract(category, keys, hits, language)
        return await _call(self.extractor.extract.remote(category, keys, hits, language))

    async def vocabulary(self, category):
        return await _call(self.perception.vocabulary.remote(category))

    async def caption(self, photos, category, keys, language, max_new_tokens):
        return await _call(self.generator.caption.remote(photos, category, keys, language, max_new_tokens))

    async def read_caption(self, caption, vector=None, fingerprint=None):
        return await _call(self.perception.read_caption.remote(caption, vector, fingerprint))

    def stream(self, prompt, photos, language, max_new_tokens, blocked=None):
        return self.generator.options(stream=True).stream.remote(prompt, photos, language, max_new_tokens, blocked)

    async def close(self, stream) -> None:
        stream.cancel()


def _unavailable(exc: BaseException) -> Optional[ApiError]:
    """A Ray Serve overload/unavailability, or a replica lost mid-request (its node died), as a
    JSON 503 the client may retry (None for anything else)."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError

    try:
        from ray.serve.exceptions import DeploymentUnavailableError
    except ImportError:  # pragma: no cover
        DeploymentUnavailableError = ()  # type: ignore
    if isinstance(exc, BackPressureError):
        return ApiError("overloaded", "the service is at capacity; retry shortly", retry_after=2)
    if DeploymentUnavailableError and isinstance(exc, DeploymentUnavailableError):
        return ApiError("unavailable", "a part of the service is unavailable; retry shortly", retry_after=5)
    if isinstance(exc, (RayActorError, ActorUnavailableError)):
        return ApiError("unavailable", "the replica working on this draft was lost (its node or process died); "
                        "retry", retry_after=1)
    return None


async def read_body(request: Request, limit: int, timeout_s: Optional[float] = None) -> bytes:
    """The whole body, at most ``limit`` bytes, within ``timeout_s`` (408 body_timeout past it)."""
    if timeout_s is None:
        return await _read_body(request, limit)
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError("body_timeout", f"the request body did not arrive within {timeout_s:g}s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError("body_too_large", f"the request body is {int(declared) / 2**20:.1f} MB; the limit is "
                               f"{limit / 2**20:g} MB")
        except ValueError:
            raise ApiError("malformed_request", f"Content-Length {declared!r} is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("body_too_large", f"the request body is over the {limit / 2**20:g} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _flag(value: Optional[str], name: str) -> bool:
    v = (value or "").strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ApiError("invalid_field", f"{name} must be true or false, got {value!r}")


class Ingress:
    """Serve ingress deployment (wrapped with ``serve.ingress(api)`` by ``app.py``)."""

    def __init__(self, safety, perception, extractor, generator, cfg: ServeConfig):
        self.cfg = cfg
        self.templates = load_templates(cfg.templates_path)
        self.known_keys = sorted({k for tpl in self.templates.values() for k in tpl})
        local = None
        if extractor is None:  # extract.backend offline: no deployment, a pure function of the hits
            from ipl.serve.extractor import AttributeExtractor

            local = AttributeExtractor(cfg)
        self.stages = HandleStages(safety, perception, extractor, generator, local)
        from ipl.serve.metrics import DraftMetrics

        self.metrics = DraftMetrics()
        self.pipeline = DraftPipeline(self.stages, self.templates, cfg, load_levels(cfg.templates_path), self.metrics)
        self.page_html = resources.files("ipl.serve").joinpath("page.html").read_text(encoding="utf-8")
        self.inflight = 0
        self.counts = {"drafts": 0, "rejected_overload": 0, "errors": 0, "feedback": 0, "feedback_errors": 0}
        self.feedback = None
        if cfg.feedback.enabled:  # adoption feedback: every draft recorded, sellers' outcomes accepted
            from ipl.feedback.store import FeedbackStore, feedback_url

            self.feedback = FeedbackStore(feedback_url(cfg))

    # -- admission --------------------------------------------------------------------------
    def _error(self, exc: ApiError) -> JSONResponse:
        self.metrics.rejected_with(exc.code)
        return error_response(exc)

    def _admit(self) -> None:
        if self.inflight >= self.cfg.pipeline.max_inflight:
            self.counts["rejected_overload"] += 1
            raise ApiError("overloaded", f"{self.inflight} drafts in progress on this replica (limit "
                           f"{self.cfg.pipeline.max_inflight}); retry shortly", retry_after=self.cfg.pipeline.retry_after_s)
        self.inflight += 1

    async def _guarded(self, parse, work):
        """``parse()`` (reads and checks the request: no capacity is held while a body arrives), then
        ``work(parsed)`` (a coroutine returning a Response) with admission and error mapping."""
        try:
            parsed = await parse()
        except ApiError as exc:
            self.counts["errors"] += 1
            return self._error(exc)
        try:
            self._admit()
        except ApiError as exc:
            return self._error(exc)
        release = True
        try:
            response = await work(parsed)
            if isinstance(response, StreamingResponse):
                release = False  # the stream releases its slot when it ends
            return response
        except ApiError as exc:
            self.counts["errors"] += 1
            return self._error(exc)
        except Exception as exc:  # noqa: BLE001
            mapped = _unavailable(exc)
            if mapped is not None:
                return self._error(mapped)
            log.exception("draft failed")
            return self._error(ApiError("internal", f"internal error ({type(exc).__name__}); it is logged"))
        finally:
            if release:
                self.inflight -= 1

    async def _release_after(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in events:
                yield chunk
        finally:
            self.inflight -= 1

    # -- draft ------------------------------------------------------------------------------
    async def _parse_draft(self, request: Request) -> tuple[DraftRequest, bool]:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise ApiError("unsupported_media_type", f"send multipart/form-data with 'photos' file parts, not "
                           f"{ctype or 'no content type'}")
        boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"') if "boundary=" in ctype else ""
        if not boundary:
            raise ApiError("malformed_multipart", "the multipart content type has no boundary")
        body = await read_body(request, int(self.cfg.safety.max_body_mb * 2**20), self.cfg.safety.body_timeout_s)
        if f"--{boundary}--".encode() not in body:
            raise ApiError("malformed_multipart", "the multipart body has no closing boundary (a truncated upload?)")
        request._body = body  # starlette's form parser reads the capped body
        try:
            form = await request.form(max_files=self.cfg.safety.max_photos + 50, max_fields=50,
                                      max_part_size=64 * 1024)
        except Exception as exc:  # noqa: BLE001 - python-multipart / starlette parse errors
            raise ApiError("malformed_multipart", f"the multipart body cannot be parsed: {exc}") from None
        photos, fields = [], {}
        for key, value in form.multi_items():
            if key not in DRAFT_FIELDS:
                raise ApiError("invalid_field", f"unknown field {key!r}; fields: {', '.join(sorted(DRAFT_FIELDS))}")
            if key == "photos":
                if isinstance(value, str):
                    raise ApiError("invalid_field", "'photos' must be file parts (multipart filename=...), "
                                   "got a text field")
                photos.append(await value.read())
            else:
                if not isinstance(value, str):
                    raise ApiError("invalid_field", f"{key!r} must be a text field, got a file")
                if key in fields:
                    raise ApiError("invalid_field", f"{key!r} given twice")
                fields[key] = value
        check_photo_count(len(photos), self.cfg.safety)
        category = fields.get("category")
        if category is not None:
            category = category.strip() or None
            if category is not None and len(category) > 64:
                raise ApiError("invalid_field", "category is longer than 64 characters")
        max_new = fields.get("max_new_tokens")
        if max_new is not None:
            try:
                max_new = int(max_new)
            except ValueError:
                raise ApiError("invalid_field", f"max_new_tokens must be an integer, got {max_new!r}") from None
            if not 1 <= max_new <= self.cfg.generate.max_new_tokens:
                raise ApiError("invalid_field", f"max_new_tokens must be within 1..{self.cfg.generate.max_new_tokens}")
        req = DraftRequest(photos=photos, category=category, language=(fields.get("language") or "en").strip(),
                           max_new_tokens=max_new, confirmed=self._confirmed(fields.get("confirmed")),
                           notes=fields.get("notes"))
        return req, _flag(fields.get("stream"), "stream")

    def _confirmed(self, raw) -> dict[str, str]:
        return parse_confirmed(raw, self.known_keys, self.cfg.extract.max_value_chars,
                               self.cfg.evidence.max_confirmed)

    async def _draft_events(self, draft) -> AsyncIterator[bytes]:
        yield sse("meta", draft.meta)
        try:
            async for kind, data in self.pipeline.generate(draft):
                if kind == "done" and draft.meta.get("draft_id"):
                    data = {**data, "draft_id": draft.meta["draft_id"]}
                    await self._record(draft.meta["draft_id"], "draft", draft.meta, data.get("description"))
                yield sse(kind, data)
        except Exception as exc:  # noqa: BLE001 - the stream has started: the error is the last event
            mapped = _unavailable(exc)
            if mapped is None:
                log.exception("stream failed")
                mapped = ApiError("internal", f"internal error ({type(exc).__name__})")
            yield sse("error", mapped.body()["error"])

    async def _record(self, draft_id: str, endpoint: str, meta: dict, description: Optional[str]) -> None:
        """The draft in the feedback database, committed before the draft's last event/reply leaves
        (a seller's feedback on it can then never meet an unknown id)."""
        if self.feedback is None:
            return
        cat = meta.get("category")
        category = cat.get("name") if isinstance(cat, dict) else None
        attrs = [{k: a.get(k) for k in ("key", "value", "status")} for a in meta.get("attributes") or []]
        try:
            await asyncio.to_thread(self.feedback.add_draft, draft_id, endpoint, meta.get("language"), category,
                                    description, attrs, meta.get("index_version"))
        except Exception:  # noqa: BLE001 - the draft itself is still answered; the failure is counted
            self.counts["feedback_errors"] += 1
            log.exception("could not record draft %s", draft_id)

    async def draft(self, request: Request):
        async def work(parsed):
            req, stream = parsed
            self.counts["drafts"] += 1
            draft_id = uuid.uuid4().hex
            if not stream:
                reply = await self.pipeline.run(req)
                reply["draft_id"] = draft_id
                await self._record(draft_id, "draft", reply, reply.get("description"))
                return JSONResponse(reply)
            draft = await self.pipeline.prepare(req)
            await self.pipeline.admit(draft)  # generation capacity first: overload is a 503, never a 200
            draft.meta["draft_id"] = draft_id
            return StreamingResponse(self._release_after(self._draft_events(draft)), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        return await self._guarded(lambda: self._parse_draft(request), work)

    # -- OpenAI-compatible ------------------------------------------------------------------
    def _parse_chat(self, body: Any) -> tuple[DraftRequest, bool, str]:
        if not isinstance(body, dict):
            raise ApiError("malformed_request", "the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError("invalid_field", "'messages' must be a non-empty list")
        photos, notes = [], []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise ApiError("invalid_field", "each message needs a role of system, user or assistant")
            content = m.get("content")
            user = m.get("role") == "user"
            if isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        raise ApiError("invalid_field", "content parts must be objects")
                    if part.get("type") == "image_url":
                        url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) \
                            else str(part.get("image_url") or "")
                        photos.append(self._data_url(url))
                    elif part.get("type") in ("text", None):
                        if user and isinstance(part.get("text"), str):
                            notes.append(part["text"])
                    else:
                        raise ApiError("invalid_field", f"content part type {part.get('type')!r} is not supported")
            elif isinstance(content, str):
                if user:
                    notes.append(content)
            elif content is not None:
                raise ApiError("invalid_field", "message content must be a string or a list of parts")
        check_photo_count(len(photos), self.cfg.safety, "image_url parts (data URLs)")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ApiError("invalid_field", "max_tokens must be a positive integer")
        language = body.get("language", "en")
        if not isinstance(language, str):
            raise ApiError("invalid_field", "language must be a string")
        category = body.get("category")
        if category is not None and not isinstance(category, str):
            raise ApiError("invalid_field", "category must be a string")
        req = DraftRequest(photos=photos, category=category, language=language,
                           max_new_tokens=min(max_tokens, self.cfg.generate.max_new_tokens) if max_tokens else None,
                           confirmed=self._confirmed(body.get("confirmed")),
                           notes="\n".join(n for n in notes if n.strip()) or None, endpoint="chat")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError("invalid_field", "stream must be true or false")
        return req, stream, str(body.get("model") or "ipl")

    @staticmethod
    def _data_url(url: str) -> bytes:
        if not url.startswith("data:"):
            raise ApiError("remote_image_url", "image_url must be a data: URL (base64); the service does not fetch "
                           "remote images")
        head, _, payload = url.partition(",")
        if ";base64" not in head:
            raise ApiError("invalid_field", "image data URLs must be base64-encoded")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("invalid_field", "an image data URL is not valid base64") from None

    async def _parse_chat_request(self, request: Request):
        raw = await read_body(request, int(self.cfg.safety.max_body_mb * 2**20), self.cfg.safety.body_timeout_s)
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError("malformed_request", "the body is not valid JSON") from None
        return self._parse_chat(body)

    async def chat(self, request: Request):
        async def work(parsed):
            req, stream, model = parsed
            self.counts["drafts"] += 1
            draft = await self.pipeline.prepare(req)
            await self.pipeline.admit(draft)  # generation capacity first: overload is a 503, never a 200
            cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
            if stream:
                return StreamingResponse(self._release_after(self._chat_chunks(draft, cid, created, model)),
                                         media_type="text/event-stream")
            text, finish, usage = "", "stop", None
            async for kind, data in self.pipeline.generate(draft):
                if kind == "done":
                    text, finish, usage = data["description"], "length" if data["truncated"] else "stop", data["usage"]
                elif kind == "halted":
                    text, finish = "", "content_filter"
                elif kind == "error":
                    text, finish = data["message"], "stop"
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "ipl": {**draft.meta, "fallbacks": draft.fallbacks}})

        return await self._guarded(lambda: self._parse_chat_request(request), work)

    async def _chat_chunks(self, draft, cid: str, created: int, model: str) -> AsyncIterator[bytes]:
        def chunk(delta: dict, finish: Optional[str] = None) -> bytes:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        finish, usage = "stop", None
        async for kind, data in self.pipeline.generate(draft):
            if kind == "delta":
                yield chunk({"content": data["text"]})
            elif kind == "done":
                finish, usage = "length" if data["truncated"] else "stop", data["usage"]
            elif kind == "halted":
                finish = "content_filter"
            elif kind == "error":
                yield chunk({"content": data["message"]})
        yield chunk({}, finish)
        if usage is not None:  # as OpenAI's stream_options.include_usage: a last chunk with no choices
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                    "usage": usage}
            yield f"data: {json.dumps(body)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    # -- adoption feedback ------------------------------------------------------------------
    async def post_feedback(self, request: Request, draft_id: str):
        """``POST /v1/listings/{draft_id}/feedback``: ``{"outcome": "published"|"abandoned",
        "text": the published description, "confirmed": {key: value}}`` -> 201; a 4xx JSON error
        (and nothing written) for an unknown draft, an oversize or malformed body."""
        try:
            if self.feedback is None:
                raise ApiError("not_found", "feedback is off (feedback.enabled: false)")
            if not (len(draft_id) == 32 and all(c in "0123456789abcdef" for c in draft_id)):
                raise ApiError("unknown_draft", f"no draft {draft_id[:64]!r}")
            fb = self.cfg.feedback
            raw = await read_body(request, fb.max_body_kb * 1024, self.cfg.safety.body_timeout_s)
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError("malformed_request", "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError("malformed_request", "the body must be a JSON object")
            unknown = sorted(set(body) - {"outcome", "text", "confirmed"})
            if unknown:
                raise ApiError("invalid_field", f"unknown fields {unknown} (expected outcome, text, confirmed)")
            outcome = body.get("outcome")
            if outcome not in ("published", "abandoned"):
                raise ApiError("invalid_field", "outcome must be 'published' or 'abandoned'")
            text = body.get("text")
            if text is not None and not isinstance(text, str):
                raise ApiError("invalid_field", "text must be a string")
            if outcome == "published" and not (text or "").strip():
                raise ApiError("invalid_field", "a published listing needs its text")
            if text is not None and len(text) > fb.max_text_chars:
                raise ApiError("text_too_long", f"text has {len(text)} characters; at most {fb.max_text_chars}")
            confirmed = body.get("confirmed") or {}
            if not isinstance(confirmed, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in confirmed.items()):
                raise ApiError("invalid_field", "confirmed must be an object of key -> value strings")
            if len(confirmed) > 64 or any(len(k) > 64 or len(v) > self.cfg.extract.max_value_chars
                                          for k, v in confirmed.items()):
                raise ApiError("invalid_field", f"confirmed: at most 64 keys of 64 characters, values of at most "
                               f"{self.cfg.extract.max_value_chars}")
            from ipl.feedback.store import UnknownDraft

            try:
                fid = await asyncio.to_thread(self.feedback.add_feedback, draft_id, outcome, text, confirmed)
            except UnknownDraft:
                raise ApiError("unknown_draft", f"no draft {draft_id!r} (drafts are recorded when answered)") from None
        except ApiError as exc:
            self.counts["errors"] += 1
            return self._error(exc)
        self.counts["feedback"] += 1
        return JSONResponse({"draft_id": draft_id, "feedback_id": fid, "outcome": outcome}, status_code=201)

    # -- operations -------------------------------------------------------------------------
    async def healthz(self):
        status = await self.stages.perception.status.remote()
        return {"status": "ok", "index": status, "evidence": status.get("evidence"), "inflight": self.inflight}

    async def stats(self):
        """Counters of this ingress replica and of one replica of each deployment behind it (with one
        replica each, ``photos`` is the whole graph's: decodes and encoder passes per photo)."""
        safety, perception, generator = await asyncio.gather(self.stages.safety.get_stats.remote(),
                                                             self.stages.perception.get_stats.remote(),
                                                             self.stages.generator.get_stats.remote())
        parts = (safety, perception, generator)
        return {"ingress": {**self.counts, "inflight": self.inflight},
                "safety": safety, "perception": perception, "generator": generator,
                "photos": {"received": safety.get("photos", 0),
                           "decoded": sum(p.get("decoded", 0) for p in parts),
                           "encoded": sum(p.get("encoded", 0) for p in parts)}}

    async def page(self):
        return HTMLResponse(self.page_html)


def build_api() -> FastAPI:
    """The HTTP routes; each calls the Ingress object of the replica it runs in."""
    from ray import serve

    api = FastAPI(title="IPL", description="Intelligent Product Listing: photos in, listing draft out.")
    api.add_exception_handler(StarletteHTTPException, _http_error)

    def ingress() -> Ingress:
        return serve.get_replica_context().servable_object

    @api.post("/v1/listings/draft")
    async def draft(request: Request):
        return await ingress().draft(request)

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        return await ingress().chat(request)

    @api.post("/v1/listings/{draft_id}/feedback")
    async def feedback(draft_id: str, request: Request):
        return await ingress().post_feedback(request, draft_id)

    @api.get("/healthz")
    async def healthz():
        return await ingress().healthz()

    @api.get("/v1/stats")
    async def stats():
        return await ingress().stats()

    @api.get("/", response_class=HTMLResponse)
    async def page():
        return await ingress().page()

    return api
