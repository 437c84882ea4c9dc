"""The OpenAI-compatible HTTP API: FastAPI routes, thin shells over `AskService`.

`model` is `swarm/auto` (route by confidence) or `swarm/<domain>`; responses name the domain
that answered as their `model`, and carry the route in a top-level `swarm` object (on the
response, or on a stream's first and last chunks) and in `x-swarm-*` headers. Errors use
OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`, as HTTP errors before a
stream begins and as one `data:` event after (then the stream ends, without `[DONE]`).
`usage.prompt_tokens` is the prompt's UTF-8 bytes: the hub runs no tokenizer, and every node's
byte-level tokenizer makes at most that many tokens of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from hub.access.limits import QUOTA, LimitError
from hub.api.asks import Answered, AskService, Question
from hub.api.metrics import CONTENT_TYPE, Metrics
from hub.api.openai_schema import AUTO, PREFIX, ChatRequest, CompletionRequest, RequestError
from hub.errors import StatusError
from hub.routing.router import Drafted, Routed, Switched

log = logging.getLogger("slm-hub")

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}  # fmt: skip
ERROR_TYPE = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error",
    503: "service_unavailable_error", 504: "timeout_error", 500: "server_error",
}  # fmt: skip


def error(status: int, message: str, code: str | None = None, param: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = {"message": message, "type": ERROR_TYPE.get(status, "invalid_request_error"),
            "param": param, "code": code}  # fmt: skip
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_error(exc: StatusError) -> JSONResponse:
    """A refusal as OpenAI's clients expect it: a rate limit may be retried after a while; an
    exhausted quota may not (`x-should-retry: false` stops the openai client's retries)."""
    if isinstance(exc, LimitError):
        if exc.reason == QUOTA:
            response = error(429, str(exc), QUOTA, headers={"x-should-retry": "false"})
            response.headers["x-should-retry"] = "false"
            return response
        return error(429, str(exc), exc.reason, headers={
            "retry-after": str(max(1, round(exc.retry_after_s)))})  # fmt: skip
    if exc.status == "RESOURCE_EXHAUSTED":  # a prompt over the hub's size limit
        return error(400, str(exc), "context_length_exceeded", "messages")
    status = HTTP_STATUS.get(exc.status, 500)
    return error(status, str(exc), exc.status.lower())


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _swarm(
    routed: Routed, switches: list[Switched], done: Answered | None = None,
    drafted: Drafted | None = None,
) -> dict:  # fmt: skip
    """The routing decision (and in refine mode the draft), and on the last chunk who
    finished, what it cost."""
    out: dict[str, Any] = {
        "mode": "refine" if drafted else "direct",
        "request_id": routed.request_id, "node_id": routed.node_id, "domain": routed.domain,
        "posterior": routed.posterior,
        "candidates": [{"node_id": c.node_id, "domain": c.domain, "loglik": c.loglik,
                        "similarity": c.claimed_similarity, "words_loglik": c.words_loglik,
                        "evidence": c.evidence,
                        "posterior": c.posterior, "declined": c.declined}
                       for c in routed.candidates],
        "switches": [{"from_node": s.from_node, "to_node": s.to_node, "reason": s.reason}
                     for s in switches],
    }  # fmt: skip
    if drafted is not None:
        out["draft"] = {"by": drafted.by, "tokens": drafted.tokens, "text": drafted.text}
    if done is not None:
        r = done.result
        out |= {"node_id": r.node_id, "domain": r.domain, "posterior": r.confidence,
                "segments": [{"node_id": n, "tokens": t} for n, t in r.segments],
                "charged_credits": done.charged / 1e6, "latency_ms": r.latency_ms,
                "verified": r.verified}  # fmt: skip
    return out


class _Exchange:
    """One request's answer as an OpenAI response: chat or text completion, streamed or not."""

    def __init__(self, chat: bool, prompt: str, max_tokens: int, include_usage: bool) -> None:
        self.chat = chat
        self.prompt_tokens = len(prompt.encode("utf-8", "surrogatepass"))
        self.max_tokens = max_tokens
        self.include_usage = include_usage
        self.created = int(time.time())
        self.switches: list[Switched] = []
        self.drafted: Drafted | None = None

    def ids(self, routed: Routed) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        prefix = "chatcmpl-" if self.chat else "cmpl-"
        return {"id": prefix + routed.request_id, "created": self.created, "object": kind}

    def usage(self, done: Answered) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done.tokens,
                "total_tokens": self.prompt_tokens + done.tokens}  # fmt: skip

    def finish(self, done: Answered) -> str:
        return "length" if done.tokens >= self.max_tokens else "stop"

    def whole(self, routed: Routed, text: str, done: Answered) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish(done)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        return {
            **self.ids(routed),
            "model": PREFIX + done.result.domain,
            "choices": [choice],
            "usage": self.usage(done),
            "swarm": _swarm(routed, self.switches, done, self.drafted),
        }

    def chunk(self, routed: Routed, text: str | None, finish: str | None = None,
              swarm: dict | None = None, model: str = "") -> dict[str, Any]:  # fmt: skip
        ids = self.ids(routed)
        ids["object"] += ".chunk" if self.chat else ""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice |= {"text": text or "", "logprobs": None}
        out = {**ids, "model": model or PREFIX + routed.domain, "choices": [choice]}
        if self.include_usage:
            out["usage"] = None
        if swarm is not None:
            out["swarm"] = swarm
        return out

    async def stream(self, routed: Routed, events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        async with contextlib.aclosing(events):  # a hang-up cancels the node's work now
            first = self.chunk(routed, "", swarm=_swarm(routed, [], drafted=self.drafted))
            if self.chat:
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            yield _event(first)
            try:
                async for event in events:
                    if isinstance(event, str):
                        yield _event(self.chunk(routed, event))
                    elif isinstance(event, Switched):
                        self.switches.append(event)
                    elif isinstance(event, Answered):
                        model = PREFIX + event.result.domain
                        swarm = _swarm(routed, self.switches, event, self.drafted)
                        yield _event(self.chunk(routed, None, self.finish(event), swarm, model))
                        if self.include_usage:
                            yield _event({**self.ids(routed), "object": self.ids(routed)["object"]
                                          + (".chunk" if self.chat else ""), "model": model,
                                          "choices": [], "usage": self.usage(event)})  # fmt: skip
            except StatusError as exc:
                status = HTTP_STATUS.get(exc.status, 500)
                yield _event({"error": {"message": str(exc), "type": ERROR_TYPE.get(status),
                                        "param": None, "code": exc.status.lower()}})  # fmt: skip
                return
            except Exception as exc:
                incident = uuid.uuid4().hex[:12]
                log.error("a streamed answer failed [incident %s]: %s", incident, exc,
                          exc_info=exc)  # fmt: skip
                yield _event({"error": {"message": f"the hub failed to finish this answer "
                                        f"(incident {incident})", "type": "server_error",
                                        "param": None, "code": "internal"}})  # fmt: skip
                return
            yield b"data: [DONE]\n\n"

    async def collect(self, routed: Routed, events: AsyncIterator[Any]) -> dict[str, Any]:
        text: list[str] = []
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, str):
                    text.append(event)
                elif isinstance(event, Switched):
                    self.switches.append(event)
                elif isinstance(event, Answered):
                    return self.whole(routed, "".join(text), event)
        raise StatusError("UNAVAILABLE", "the answer ended without a result")


def _headers(routed: Routed) -> dict[str, str]:
    return {
        "x-swarm-request-id": routed.request_id,
        "x-swarm-node": routed.node_id,
        "x-swarm-domain": routed.domain,
        "x-swarm-posterior": f"{routed.posterior:.6f}",
    }


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a body that does not fit the schema, as OpenAI's 400."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problem = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
    message = f"{where}: {problem.get('msg')}" if where else str(problem.get("msg"))
    return error(400, message, "invalid_request", where or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error(status, str(getattr(exc, "detail", "")), None)


async def _failed(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("an HTTP request failed [incident %s]: %s", incident, exc, exc_info=exc)
    return error(500, f"the hub failed to serve this (incident {incident})", "internal")


class _Api:
    """The routes' business: authenticate, turn the body into a Question, answer it."""

    def __init__(self, service: AskService, metrics: Metrics,
                 domains: Callable[[], list[str]]) -> None:  # fmt: skip
        self.service = service
        self.metrics = metrics
        self.domains = domains

    async def models(self, request: Request) -> Response:
        names = [AUTO] + [PREFIX + d for d in sorted(set(self.domains()))]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "swarm"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    async def answer(self, request: Request, body: ChatRequest | CompletionRequest) -> Response:
        key = request.state.key  # authenticated before the body was read (http.Guard)
        try:
            prompt = body.prompt() if isinstance(body, ChatRequest) else body.text()
            params, domain = body.params(), body.domain()
        except (RequestError, ValueError) as exc:  # ValueError: SamplingParams' WireError
            self.metrics.rejected.labels("invalid_argument").inc()
            return error(400, str(exc), "invalid_request", getattr(exc, "param", None))
        question = Question(prompt, params, domain, request.headers.get("idempotency-key", ""),
                            body.mode(), body.draft())  # fmt: skip
        usage = bool(body.stream_options and body.stream_options.include_usage)
        exchange = _Exchange(isinstance(body, ChatRequest), prompt, params.max_tokens, usage)
        events = self.service.ask(key, question).__aiter__()
        try:
            routed = await events.__anext__()  # the route is known before any text
            if isinstance(routed, Drafted):  # refine mode: the draft comes first
                exchange.drafted = routed
                routed = await events.__anext__()
            if not body.stream:
                whole = await exchange.collect(routed, events)
                return JSONResponse(whole, headers=_headers(routed))
        except StatusError as exc:
            await events.aclose()  # type: ignore[attr-defined]
            return status_error(exc)
        headers = {**_headers(routed), "cache-control": "no-cache"}
        return StreamingResponse(exchange.stream(routed, events), media_type="text/event-stream",
                                 headers=headers)  # fmt: skip


def build_app(service: AskService, metrics: Metrics,
              domains: Callable[[], list[str]]) -> FastAPI:  # fmt: skip
    app = FastAPI(title="SwarmLLM hub", version="2", docs_url=None, redoc_url=None,
                  description="OpenAI-compatible API of a SwarmLLM hub")  # fmt: skip
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _failed)
    api = _Api(service, metrics, domains)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await api.models(request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest) -> Response:
        return await api.answer(request, body)

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await api.answer(request, body)

    return app
