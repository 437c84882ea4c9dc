"""Serving the HTTP API (openai_app.py) with uvicorn on the hub's event loop, TLS with the
hub's certificate, and a cap on request bodies enforced before anything parses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from hub.access.gate import Gate
from hub.api.asks import AskService
from hub.api.grpc_api import MAX_ASK_BYTES
from hub.api.metrics import Metrics
from hub.api.openai_app import build_app
from hub.config import ServeOptions
from hub.tls import TLSFiles
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

MAX_BODY_BYTES = 2 * MAX_ASK_BYTES  # JSON escapes make a prompt's body up to ~2x its bytes
Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable, Callable], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes (declared or streamed) is refused before it
    is read whole: 400 with OpenAI's error envelope, which its clients raise as BadRequestError
    (a 413 would reach them as an unnamed status error)."""

    def __init__(self, app: ASGI, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"the request body is over this hub's limit of {self.limit} bytes",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        )
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


class _Server(uvicorn.Server):
    """The hub owns the process's signals (its own handlers stop every plane in order)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield


class HttpServer:
    def __init__(self, service: AskService, gate: Gate, metrics: Metrics, options: ServeOptions,
                 tls_home: Path | None) -> None:  # fmt: skip
        network = service.network
        app = build_app(service, gate, metrics,
                        lambda: [c.domain for c in network.connections.values()])  # fmt: skip
        tls = {} if tls_home is None else {
            "ssl_certfile": str(TLSFiles(tls_home).server_cert),
            "ssl_keyfile": str(TLSFiles(tls_home).server_key)}  # fmt: skip
        config = uvicorn.Config(
            BodyLimit(app, MAX_BODY_BYTES), host=options.host, port=options.http_port,
            log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            **tls,
        )  # fmt: skip
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
