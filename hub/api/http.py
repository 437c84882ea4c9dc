"""Serving the HTTP API (openai_app.py) with uvicorn on the hub's event loop, TLS with the
hub's certificate, and a cap on request bodies enforced before anything parses them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from hub.access.gate import Gate
from hub.access.keys import KeyRecord
from hub.api.asks import AskService
from hub.api.metrics import Metrics
from hub.api.openai_app import build_app, error, status_error
from hub.api.views import Views
from hub.api.web import add_pages
from hub.config import ServeOptions
from hub.errors import StatusError
from hub.tls import TLSFiles
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

BODY_S = 10.0  # a request body must arrive within this; a trickle holds no connection
LOOPBACK = ("127.0.0.1", "::1")
Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable, Callable], Awaitable[None]]


def body_limit(max_prompt_bytes: int) -> int:
    """The largest body an Ask may need: its prompt JSON-escaped (up to ~2x) and settings."""
    return 2 * max_prompt_bytes + 64 * 1024


class Guard:
    """ASGI middleware in front of every route. `/v1/` and `/api/` (the pages' data) calls are
    authenticated before their body is read, so a caller without a key costs no parsing;
    `/metrics` answers loopback or the admin key; no body is read past `limit` bytes or BODY_S
    seconds. Refusals are 400 with OpenAI's error envelope (a 413 would reach its clients as an
    unnamed status error)."""

    def __init__(self, app: ASGI, gate: Gate, limit: int) -> None:
        self.app = app
        self.gate = gate
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        local = (scope.get("client") or ("",))[0] in LOOPBACK
        if path.startswith(("/v1/", "/api/")) or (path == "/metrics" and not local):
            authorization = headers.get(b"authorization", b"").decode("latin-1") or None
            try:
                scope.setdefault("state", {})["key"] = await self._key(path, authorization)
            except StatusError as exc:
                await status_error(exc)(scope, receive, send)
                return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, receive, send, f"over this hub's limit of {self.limit} bytes")
            return
        seen, deadline = 0, None

        async def bounded() -> dict:
            nonlocal seen, deadline
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + BODY_S
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _Refused(f"not all here within {BODY_S:g} s") from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _Refused(f"over this hub's limit of {self.limit} bytes")
            return message

        try:
            await self.app(scope, bounded, send)
        except _Refused as exc:
            await self._refuse(scope, receive, send, str(exc))

    async def _key(self, path: str, authorization: str | None) -> KeyRecord:
        key = await self.gate.authenticate(authorization)
        if path == "/metrics" and not key.admin:
            raise StatusError("PERMISSION_DENIED", "/metrics is for loopback or the admin key")
        if path == "/v1/models":  # an Ask's place is held by the gate; other calls count here
            self.gate.limiter.take(key)
        return key

    async def _refuse(self, scope: Scope, receive: Callable, send: Callable, why: str) -> None:
        response = error(400, f"the request body is {why}", "request_too_large")
        with contextlib.suppress(Exception):
            await response(scope, receive, send)


class _Refused(Exception):
    pass


class _Server(uvicorn.Server):
    """The hub owns the process's signals (its own handlers stop every plane in order)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield


class HttpServer:
    def __init__(self, service: AskService, gate: Gate, metrics: Metrics, options: ServeOptions,
                 tls_home: Path | None, views: Views | None = None) -> None:  # fmt: skip
        network = service.network
        app = build_app(service, metrics,
                        lambda: [c.domain for c in network.connections.values()])  # fmt: skip
        if views is not None:
            add_pages(app, views, gate.balance, error)
        tls = {} if tls_home is None else {
            "ssl_certfile": str(TLSFiles(tls_home).server_cert),
            "ssl_keyfile": str(TLSFiles(tls_home).server_key)}  # fmt: skip
        guarded = Guard(app, gate, body_limit(options.router.max_prompt_bytes))
        config = uvicorn.Config(
            guarded, host=options.host, port=options.http_port, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            limit_concurrency=4 * options.router.max_asks + 64, **tls,
        )  # fmt: skip  # fmt: skip
        self.server = _Server(config)
        self.scheme = "http" if tls_home is None else "https"
        self.address = options.host
        self.port = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # its own error
                raise SLMError(f"the HTTP API could not listen on {self.address}; is its port "
                               "free? (--http-port)")  # fmt: skip
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
