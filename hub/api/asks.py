"""One Ask, whatever protocol it came by: checked, admitted by the gate, routed under a total
deadline, recorded in the ledger (the asker's account pays) and counted in the metrics.

The gRPC and HTTP services are shells over `AskService.ask`: they turn a request into a
`Question`, the events into their own messages, and a `StatusError` into their own status.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from hub.access.gate import Gate, request_id_for
from hub.access.keys import KeyRecord
from hub.access.limits import LimitError
from hub.api.metrics import Metrics
from hub.errors import StatusError
from hub.ledger.rewards import Rewards
from hub.routing.network import Network
from hub.routing.router import Result, Routed, Switched
from protos.errors import WireError
from protos.wire import SamplingParams
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

# (prompt, result, payer account) -> micro-credits charged; durable once it returns
Record = Callable[[str, Result, str], Awaitable[int]]


@dataclass(frozen=True)
class Question:
    prompt: str
    params: SamplingParams
    domain: str = ""  # route among this domain's nodes only
    idempotency_key: str = ""  # a retry with the same value is charged once


@dataclass(frozen=True)
class Answered:
    """The last event: the routing result and what the asker paid."""

    result: Result
    charged: int

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.result.segments)


Event = Routed | str | Switched | Answered


def reason_of(exc: StatusError) -> str:
    """The rejected-requests label of a refusal: the limit's name, else the status's."""
    return exc.reason if isinstance(exc, LimitError) else exc.status.lower()


class AskService:
    def __init__(
        self, network: Network, gate: Gate, record: Record, rewards: Rewards, metrics: Metrics
    ) -> None:
        self.network = network
        self.gate = gate
        self.record = record
        self.rewards = rewards
        self.metrics = metrics

    async def ask(self, key: KeyRecord, question: Question) -> AsyncIterator[Event]:
        """Routed, text pieces, Switched notes, then Answered; StatusError if refused or
        failed (a refusal before routing: no node heard of the request)."""
        started = time.perf_counter()
        try:
            self.network.router.validate(question.prompt, question.domain)
            request_id = (request_id_for(key, question.idempotency_key)
                          if question.idempotency_key else uuid.uuid4().hex)  # fmt: skip
            cost = self.rewards.price(question.params.max_tokens)
            admitted = self.gate.admit(key, request_id, cost)
            await admitted.__aenter__()
        except StatusError as exc:
            self.metrics.rejected.labels(reason_of(exc)).inc()
            raise
        except (SLMError, WireError) as exc:
            self.metrics.rejected.labels("invalid_argument").inc()
            raise StatusError("INVALID_ARGUMENT", str(exc)) from None
        outcome = "error"
        try:
            async for event in self._routed(key, question, request_id, started):
                if isinstance(event, Answered):
                    outcome = "success" if event.result.verified else "unverified"
                yield event
        except StatusError as exc:
            outcome = exc.status.lower()
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            await admitted.__aexit__(None, None, None)
            self.metrics.asks.labels(outcome).inc()
            self.metrics.duration.observe(time.perf_counter() - started)

    async def _routed(
        self, key: KeyRecord, question: Question, request_id: str, started: float
    ) -> AsyncIterator[Event]:
        network = self.network
        deadline = started + network.router.config.ask_deadline_s
        events = network.router.ask(question.prompt, question.params, network.priors,
                                    request_id, question.domain).__aiter__()  # fmt: skip
        network.asks += 1
        first_text = True
        try:
            while True:
                left = deadline - time.perf_counter()
                try:
                    event = await asyncio.wait_for(events.__anext__(), max(left, 0.001))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise StatusError("DEADLINE_EXCEEDED", "the answer took longer than the "
                                      f"{network.router.config.ask_deadline_s:g} s this hub "
                                      "allows an Ask") from None  # fmt: skip
                if isinstance(event, str) and first_text:
                    first_text = False
                    self.metrics.first_token.observe(time.perf_counter() - started)
                elif isinstance(event, Switched):
                    self.metrics.node_failures.labels(event.from_node[:16]).inc()
                    log.warning("node %s %s; %s continues", event.from_node[:12], event.reason,
                                event.to_node[:12])  # fmt: skip
                elif isinstance(event, Result):
                    event = Answered(event, await self._record(question.prompt, event, key))
                    self.metrics.tokens.inc(event.tokens)
                yield event
        finally:
            network.asks -= 1
            await events.aclose()  # type: ignore[attr-defined]

    async def _record(self, prompt: str, result: Result, key: KeyRecord) -> int:
        """Record the answer (durable before the client sees its result) and return its charge.
        A failed write is logged: the answer stands."""
        began = time.perf_counter()
        try:
            charged = await self.record(prompt, result, key.account)
        except Exception as exc:
            log.error("could not record inference %s in the ledger: %s", result.request_id, exc)
            charged = 0
        self.metrics.ledger_write.observe(time.perf_counter() - began)
        log.info("ask %s -> %s node %s, p=%.3f, %d tokens, %.0f ms (hub %.1f ms), key %s",
                 result.request_id[:8], result.domain, result.node_id[:12], result.confidence,
                 sum(t for _, t in result.segments), result.latency_ms,
                 result.hub_overhead_ms, key.name)  # fmt: skip
        return charged
