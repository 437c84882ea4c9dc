"""The hub's web pages (chat, nodes, rewards, training) and the read-only JSON they poll,
served on the HTTP API's port. Thin routes over `views.Views`.

The pages are static files shipped in the package (`static/`, uPlot vendored): no CDN, and a
Content-Security-Policy that lets a page reach nothing but this hub. They hold no data; every
`/api/` call is authenticated by the key the user typed (`http.Guard`), like `/v1/`. A view is
computed at most once per `FRESH_S` and the same bytes are sent to every caller in that time,
so a crowd of open dashboards (or a flood of polls with a valid key) costs the database one
query set a second, not one per caller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from hub.access.keys import KeyRecord
from hub.api.views import MICRO, PERIODS, ViewError, Views
from hub.storage.timestamps import now_iso

STATIC = Path(__file__).parent / "static"
FRESH_S = 1.0  # a view is recomputed at most this often
VERIFY_EVERY_S = 60.0  # the whole chain is walked at most this often
KEPT_VIEWS = 1024  # past this many, views older than FRESH_S are dropped
POLL_MS = 1000  # how often the pages poll (the ceiling: 2 s)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


class _Pages(StaticFiles):
    """The shipped files, each with the security headers (they forbid every other origin)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


@dataclass
class _Fresh:
    """Computed views by name and arguments, kept `FRESH_S`; one computation at a time each."""

    views: dict[tuple, tuple[float, bytes]] = field(default_factory=dict)
    locks: dict[tuple, asyncio.Lock] = field(default_factory=dict)

    async def get(self, name: tuple, compute: Callable[[], Any]) -> bytes:
        held = self.views.get(name)
        if held and time.monotonic() - held[0] < FRESH_S:
            return held[1]
        lock = self.locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                held = self.views.get(name)
                if held and time.monotonic() - held[0] < FRESH_S:
                    return held[1]
                data = await asyncio.to_thread(_encode, compute)
        except Exception:
            # a view that is not there (an unknown node) leaves no lock behind; a lock of a
            # view that exists is kept, one per view, as its result is
            if self.locks.get(name) is lock and not lock.locked():
                del self.locks[name]
            raise
        if len(self.views) >= KEPT_VIEWS:
            stale = time.monotonic() - FRESH_S
            self.views = {k: v for k, v in self.views.items() if v[0] > stale}
        self.views[name] = (time.monotonic(), data)
        return data


def _encode(compute: Callable[[], Any]) -> bytes:
    return json.dumps(jsonable_encoder(compute()), separators=(",", ":")).encode()


@dataclass
class _Verifier:
    """The chain walked in a thread at most every VERIFY_EVERY_S; callers get the last result
    (with when it was found) rather than waiting on a walk of the whole ledger."""

    views: Views
    result: dict[str, Any] | None = None
    walked: float = -VERIFY_EVERY_S
    task: asyncio.Task | None = None

    async def status(self) -> dict[str, Any]:
        due = time.monotonic() - self.walked >= VERIFY_EVERY_S
        if due and (self.task is None or self.task.done()):
            self.walked = time.monotonic()
            self.task = asyncio.create_task(asyncio.to_thread(self._walk))
        if self.result is None and self.task is not None:
            await asyncio.shield(self.task)  # the first caller waits for the first walk
        head = await asyncio.to_thread(self.views.chain)
        return {**head, **(self.result or {})}

    def _walk(self) -> None:
        checked = self.views.ledger.verify()
        self.result = {"ok": checked.ok, "verified_entries": checked.entries,
                       "problem": checked.problem, "verified_at": now_iso()}  # fmt: skip


def _json(data: bytes) -> Response:
    return Response(data, media_type="application/json", headers={"cache-control": "no-store"})


def _admin(request: Request, what: str) -> KeyRecord:
    key: KeyRecord = request.state.key
    if not key.admin:
        raise ViewError(403, f"{what} is for the hub's admin key (~/.slm-hub/api_key on the "
                        "hub's machine); this key may chat and see the nodes and "
                        "training")  # fmt: skip
    return key


def add_pages(app: FastAPI, views: Views, balance: Callable[[str], int],
              error: Callable[[int, str, str], Response]) -> None:  # fmt: skip
    """Serve the pages at `/ui/` and their data at `/api/v1/`; `error` makes an OpenAI-style
    error response (the pages show its message)."""
    fresh = _Fresh()

    async def refused(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, ViewError) else 400
        return error(status, str(exc), {403: "forbidden", 404: "not_found"}.get(status, "invalid"))

    app.add_exception_handler(ViewError, refused)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/api/v1/me")
    async def me(request: Request) -> Response:
        """The key in use: its name, whether it is the admin's, its limits and balance."""
        key: KeyRecord = request.state.key  # cached per key: a flood reads one row a second
        return _json(await fresh.get(("me", key.key_id), lambda: {
            "name": key.name, "key_id": key.key_id, "admin": key.admin,
            "rate_per_min": key.rate_per_min, "max_concurrent": key.max_concurrent,
            "balance": balance(key.account) / MICRO, "poll_ms": POLL_MS}))  # fmt: skip

    @app.get("/api/v1/nodes")
    async def nodes(request: Request) -> Response:
        """Every node: domain, model, status, last seen, load, latency, audits."""
        admin = request.state.key.admin
        return _json(await fresh.get(("nodes", admin), lambda: views.nodes(admin)))

    @app.get("/api/v1/traffic")
    async def traffic(request: Request) -> Response:
        """Asks, tokens and latency of the last hour, by minute."""
        return _json(await fresh.get(("traffic",), views.traffic))

    @app.get("/api/v1/training")
    async def training(request: Request) -> Response:
        """Federated runs and rounds by domain: participants, rejections, losses, models."""
        return _json(await fresh.get(("training",), views.training))

    _admin_routes(app, views, fresh)
    app.mount("/ui", _Pages(directory=STATIC, html=True), name="ui")


def _admin_routes(app: FastAPI, views: Views, fresh: _Fresh) -> None:
    """What only the hub's admin key may read: balances, the leaderboard, the chain."""
    verifier = _Verifier(views)

    @app.get("/api/v1/rewards")
    async def rewards(request: Request, period: str = "day", domain: str = "") -> Response:
        """Balances, the leaderboard of a period (hour, day, week, all) and domain (admin)."""
        _admin(request, "the rewards page")
        if period not in PERIODS:
            raise ViewError(400, f"period must be hour, day, week or all, got {period[:20]!r}")
        if len(domain) > 64:
            raise ViewError(400, "a domain name is at most 64 characters")
        return _json(await fresh.get(("rewards", period, domain),
                                     lambda: views.rewards(period, domain)))  # fmt: skip

    @app.get("/api/v1/rewards/nodes/{node_id}")
    async def node_history(request: Request, node_id: str) -> Response:
        """One node's balance, newest ledger entries and audit evidence (admin)."""
        _admin(request, "a node's history")
        if len(node_id) != 32 or not all(c in "0123456789abcdef" for c in node_id):
            raise ViewError(404, "a node id is 32 hex digits")
        return _json(await fresh.get(("history", node_id),
                                     lambda: views.node_history(node_id)))  # fmt: skip

    @app.get("/api/v1/ledger/verification")
    async def verification(request: Request) -> Response:
        """The chain's head and length, and the last full verification (admin)."""
        _admin(request, "the ledger's verification")
        status = await verifier.status()
        return _json(_encode(lambda: status))
