"""`slm-hub serve`: the hub process, where the planes meet.

The routing plane (gRPC: nodes join, clients ask), the ledger (every answer recorded by the
group-commit writer before its result is sent; a client that hangs up meanwhile does not stop
the write) and the training plane (the supervised Flower SuperLink, where every admitted node's
key is registered) know nothing of each other; this module wires them: the functions the
routing services call to record an answer, read a balance, open a node's ledger account and
let its SuperNode onto the training plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from hub.access.gate import Gate
from hub.access.keys import KeyCache, KeyRecord, KeyStore
from hub.access.limits import Limiter
from hub.api.asks import AskService
from hub.api.grpc_api import SwarmServicer, swarm_handler
from hub.api.http import HttpServer
from hub.api.metrics import Metrics
from hub.api.views import Views
from hub.config import HubConfig, ServeOptions
from hub.errors import StatusError
from hub.ledger.entries import TREASURY, LedgerError, node_account
from hub.ledger.keys import load_public_key, load_signing_key
from hub.ledger.ledger import Ledger
from hub.ledger.rewards import InferenceRecord
from hub.ledger.writer import LedgerWriter
from hub.routing import audit, audit_store
from hub.routing.endpoint import ENDPOINT, EndpointConfig, EndpointDrafter
from hub.routing.network import Network
from hub.routing.router import Result
from hub.routing.server import NodeLinkServicer, start_server
from hub.storage.engine import make_engine, upgrade
from hub.storage.proofs import Proof, record_proof
from hub.storage.timestamps import iso
from hub.training.superlink import SuperLink, SuperLinkOptions
from protos.signing import sha256_text

log = logging.getLogger("slm-hub")

GENERALIST_KEY_ENV = "SLM_HUB_GENERALIST_KEY"  # --generalist-url's key: never on a command line
DRAIN_S = 5.0  # how long a stopping hub lets answers in flight finish
REVOCATION_POLL_S = 0.5  # a revoked node's stream ends within a second
REVOCATION_OVERLAP_S = 10.0  # each poll reads back this far: a late commit is not missed


class Hub:
    """One serving hub's planes and the wiring between them."""

    def __init__(self, cfg: HubConfig, options: ServeOptions) -> None:
        self.cfg = cfg
        self.options = options
        engine = make_engine(cfg.db_url)
        self.ledger = Ledger(engine, load_signing_key(cfg.signing_key_path),
                             load_public_key(cfg.public_key_path), cfg.rewards)  # fmt: skip
        self.writer = LedgerWriter(self.ledger)
        # the training plane serves on the same host, with the same transport security
        flower = SuperLinkOptions(options.host, options.flower_port, options.insecure)
        self.superlink = SuperLink(cfg.home, flower, cfg.db_url)
        self.network = Network(
            engine, options.router,
            on_admit=lambda node_id: self.ledger.ensure_accounts([node_id]),
            on_join=self.register_for_training,
        )  # fmt: skip
        self.auditor = audit.Auditor(
            options.router.audit_rate, audit_store.ModelStore(cfg.home / "audit" / "models"),
            audit.Worker(cfg.home / "logs" / "auditor.log"), self.network.connections, self.punish,
        )  # fmt: skip
        self.network.router.observe = self.auditor.observe  # rate 0 still judges impossible claims
        if options.generalist_url:
            self.network.router.drafter = EndpointDrafter(EndpointConfig(
                options.generalist_url, options.generalist_model,
                os.environ.get(GENERALIST_KEY_ENV, ""), options.generalist_ca,
            ))  # fmt: skip
        self.gate = Gate(KeyCache(KeyStore(engine)), Limiter(options.router.max_asks),
                         self.ledger.balance, self.ledger.recorded)  # fmt: skip
        self.metrics = Metrics(lambda: self.network.connections)
        self.network.router.missed = self.score_missed
        self.asks = AskService(self.network, self.gate, self.record, cfg.rewards, self.metrics)
        self._registering: set[asyncio.Task] = set()
        # The training plane's registrations, apart from the default executor, which admission
        # and the registry's writes use: a join storm's HTTP calls must not hold those up.
        self._registrar = ThreadPoolExecutor(2, thread_name_prefix="training-registration")

    def score_missed(self, node_id: str, reason: str) -> None:
        """A node asked to score gave nothing in time: counted, and logged, so an operator sees
        a node that is too slow for the deadline rather than one that merely never wins."""
        self.metrics.scores_missed.labels(node_id[:16], reason).inc()
        deadline = self.options.router.score_deadline_s
        log.info("score: node %s %s (deadline %.3g s); routed without it", node_id[:12],
                 reason, deadline)  # fmt: skip

    def register_for_training(self, node_id: str, public_key: str) -> None:
        """Let the node's SuperNode into the training plane, in the background.

        Routing does not wait for it: a node answers prompts even while the SuperLink restarts.
        """
        task = asyncio.create_task(self._register(node_id, public_key))
        self._registering.add(task)
        task.add_done_callback(self._registering.discard)

    async def _register(self, node_id: str, public_key: str) -> None:
        try:
            await asyncio.wait_for(self.superlink.ready.wait(), 120)
            loop = asyncio.get_running_loop()
            flower_id = await loop.run_in_executor(  # its own threads: HTTP, never before SQL
                self._registrar, self.superlink.register, public_key, node_id[:32]
            )
            registry = self.network.registry
            await asyncio.to_thread(registry.set_flower_node_id, node_id, flower_id)
            record = await asyncio.to_thread(registry.get, node_id)
        except Exception as exc:  # the SuperLink is down or the database failed: retried on rejoin
            log.error("node %s: not registered on the training plane: %s", node_id[:12], exc)
            return
        log.info("node %s registered on the training plane as %d", node_id[:12], flower_id)
        if record is not None and record.revoked:  # revoked while this was under way
            while not await self._unregister(node_id, flower_id):
                await asyncio.sleep(REVOCATION_POLL_S)

    async def watch_revocations(self, stop: asyncio.Event) -> None:
        """Apply `slm-hub node revoke` (written to the registry by any process): the node is
        routed to no more, its stream ends with PERMISSION_DENIED, its key leaves the training
        plane. The first poll applies every revocation so far (a key a stopped hub left on the
        SuperLink goes then). A key whose removal failed is tried again at the next poll."""
        latest = ""
        keys: dict[str, int] = {}  # revoked nodes whose Flower key is still to be removed
        removing: set[str] = set()
        while not stop.is_set():
            try:
                since = _earlier(latest, REVOCATION_OVERLAP_S)
                revoked = await asyncio.to_thread(self.network.registry.revoked_since, since)
            except Exception as exc:  # the database failed: the next poll tries again
                log.error("could not read revocations: %s", exc)
                revoked = []
            for r in revoked:
                latest = max(latest, r.revoked_at or "")
                self.network.revoke(r.node_id, r.revoked_reason)  # idempotent
                if r.flower_node_id is not None:
                    keys[r.node_id] = int(r.flower_node_id)
            for node_id in self.network.cut_revoked():  # a stream admitted meanwhile too
                log.warning("node %s revoked: its stream is closed", node_id[:12])
            for node_id, flower_id in list(keys.items()):
                if node_id not in removing:
                    removing.add(node_id)
                    task = asyncio.create_task(self._unregister(node_id, flower_id))
                    task.add_done_callback(lambda t, n=node_id: _removed(t, n, keys, removing))
                    self._registering.add(task)
                    task.add_done_callback(self._registering.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REVOCATION_POLL_S)

    async def _unregister(self, node_id: str, flower_id: int) -> bool:
        try:
            await asyncio.wait_for(self.superlink.ready.wait(), REVOCATION_POLL_S * 4)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._registrar, self.superlink.unregister, flower_id)
            await asyncio.to_thread(self.network.registry.set_flower_node_id, node_id, None)
        except TimeoutError:  # the SuperLink is not up (yet): the next poll tries again
            return False
        except Exception as exc:
            log.error("node %s: key not removed from the training plane (trying again): %s",
                      node_id[:12], exc)  # fmt: skip
            return False
        log.info("node %s: key removed from the training plane", node_id[:12])
        return True

    async def punish(self, verdict: audit.Verdict) -> None:
        """A claim the audit found false (or could not check): the evidence kept, a false one
        fined, the node's reputation (its prior in the posterior) lowered at once."""
        node = verdict.claim.node_id
        reputation = await asyncio.to_thread(self._punish, verdict)
        self.network.priors[node] = reputation
        log.warning("audit: node %s %s (%s); reputation now %.3g", node[:12], verdict.kind,
                    verdict.detail, reputation)  # fmt: skip

    def _punish(self, verdict: audit.Verdict) -> float:
        c, registry = verdict.claim, self.network.registry
        claimed = c.score.loglik if math.isfinite(c.score.loglik) else 0.0  # exact: `statement`
        proof = Proof(c.node_id, verdict.kind, c.request_id, c.score.model_version, claimed,
                      verdict.audited, c.statement(), c.score.signature,
                      verdict.detail)  # fmt: skip
        record = registry.get(c.node_id)
        if record is None or not record_proof(self.network.engine, proof):
            return self.network.priors.get(c.node_id, 1.0)  # judged already
        if verdict.kind == "false-score" and self.cfg.rewards.audit_penalty > 0:
            ref = f"audit:{c.request_id}:{c.node_id}"
            self.ledger.penalize(c.node_id, self.cfg.rewards.audit_penalty,
                                 f"audit: {verdict.detail}", ref=ref)  # fmt: skip
        reputation = audit.reputation_after(verdict.kind, record.reputation)
        registry.set_reputation(c.node_id, reputation)
        return reputation

    async def record(self, prompt: str, result: Result, payer: str) -> int:
        """Record an answer in the ledger, paid by `payer`; returns, once it is durable, what
        the payer was charged."""
        record = InferenceRecord(
            request_id=result.request_id,
            prompt_sha256=sha256_text(prompt),
            outcome="partial" if result.partial else "success" if result.verified else "unverified",
            segments=[
                (TREASURY if node.startswith(ENDPOINT) else node, tokens)
                for node, tokens in result.segments
            ],  # the operator's endpoint: its own
            candidates=[
                {
                    "node": c.node_id,
                    "domain": c.domain,
                    "loglik": c.loglik,
                    "posterior": c.posterior,
                    "declined": c.declined,
                }
                for c in result.candidates
            ],
            domain=result.domain,
            latency_ms=result.latency_ms,
            prompt=prompt if self.cfg.keep_prompts else None,
            payer=payer,
            draft_segments=result.draft_segments,
        )
        done = await asyncio.shield(asyncio.wrap_future(self.writer.submit(record)))
        return done.charged

    def balance(self, caller: KeyRecord, node: str) -> tuple[str, str, int]:
        """(node id, account, balance): the caller's own account, or (admin key only) a node's
        by id or unique prefix (blocking; one row)."""
        if not node:
            return "", caller.account, self.ledger.balance(caller.account)
        if not caller.admin:
            raise StatusError("PERMISSION_DENIED", "only the hub's admin key may read a node's "
                              "balance; leave the node out for your own")  # fmt: skip
        try:
            account = self.ledger.resolve_node(node)
        except LedgerError as exc:
            raise StatusError("NOT_FOUND", str(exc)) from None
        node_id = account.removeprefix(node_account(""))
        return node_id, account, self.ledger.balance(account)

    async def run(self, stop: asyncio.Event, ready: Callable[[int, int], None] | None) -> None:
        network = self.network
        node_link = NodeLinkServicer(network, self.options.heartbeat_s, lambda: self.superlink.port)
        swarm = SwarmServicer(self.asks, self.gate, network, self.balance)
        tls_home = None if self.options.insecure else self.cfg.home
        server, health, port = await start_server(node_link, swarm_handler(swarm),
                                                  self.options.address, tls_home)  # fmt: skip
        views = Views(self.ledger.engine, self.ledger, network.connections, self.auditor.by_node)
        http = HttpServer(self.asks, self.gate, self.metrics, self.options, tls_home, views)
        await http.start()
        supervisor = asyncio.create_task(self.superlink.supervise(stop))
        revocations = asyncio.create_task(self.watch_revocations(stop))
        audits = asyncio.create_task(self.auditor.run(stop))
        if ready is not None:
            ready(port, http.port)
        try:
            await stop.wait()
        finally:
            log.info("shutting down: finishing %d answers in flight (up to %.0f s)", network.asks,
                     DRAIN_S)  # fmt: skip
            await health.enter_graceful_shutdown()
            stopping = asyncio.create_task(server.stop(grace=DRAIN_S))  # refuses new calls now
            deadline = time.monotonic() + DRAIN_S
            while network.asks and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            network.close_all("the hub is shutting down")
            await stopping
            await http.stop()
            stop.set()
            await supervisor
            await revocations
            await audits
            self._registrar.shutdown(wait=False, cancel_futures=True)
            if isinstance(network.router.drafter, EndpointDrafter):
                await network.router.drafter.close()
            await asyncio.to_thread(self.writer.close)


async def serve(
    cfg: HubConfig, options: ServeOptions, ready: Callable[[int, int], None] | None = None
) -> None:
    """Run until SIGINT/SIGTERM; `ready(port, http port)` is called once both are bound."""
    await asyncio.to_thread(upgrade, make_engine(cfg.db_url))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Hub(cfg, options).run(stop, ready)


def _removed(task: asyncio.Task, node_id: str, keys: dict[str, int], removing: set[str]) -> None:
    """A key removal ended: done for good if it worked, else left for the next poll."""
    removing.discard(node_id)
    if not task.cancelled() and task.exception() is None and task.result():
        keys.pop(node_id, None)


def _earlier(stamp: str, seconds: float) -> str:
    """The hub-format time `seconds` before `stamp` ("" stays "": from the beginning)."""
    if not stamp:
        return ""
    return iso(datetime.fromisoformat(stamp.replace("Z", "+00:00")) - timedelta(seconds=seconds))
