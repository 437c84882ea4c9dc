"""One Ask, whatever protocol it came by: checked, admitted by the gate, routed under a total
deadline, recorded in the ledger (the asker's account pays) and counted in the metrics.

The gRPC and HTTP services are shells over `AskService.ask`: they turn a request into a
`Question`, the events into their own messages, and a `StatusError` into their own status.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from hub.routing.router import DIRECT, REFINE, Delivered, Drafted, Result, Routed, Switched
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
    mode: str = ""  # DIRECT, REFINE, or "": the hub's default (refine only where it can)
    draft: str | None = None  # the caller's own draft to refine


@dataclass(frozen=True)
class Answered:
    """The last event: the routing result and what the asker paid."""

    result: Result
    charged: int

    @property
    def tokens(self) -> int:
        """The answer's tokens (a draft's are paid for, but they are not the answer's)."""
        return sum(t for _, t in self.result.segments[self.result.draft_segments :])


Event = Drafted | Routed | str | Switched | Answered
STALLED_S = 5.0  # past the deadline, a client that stopped reading is cut off


def _partial(
    request_id: str, routed: Routed | None, delivered: Delivered, started: float
) -> Result | None:
    """What an answer cut short delivered (a draft, perhaps some text), as a result to record;
    None if it delivered no token (nothing to pay for)."""
    segments = delivered.segments
    if not any(tokens for _, tokens in segments):
        return None
    latency = (time.perf_counter() - started) * 1000
    domain, posterior, candidates = (
        (routed.domain, routed.posterior, routed.candidates) if routed else ("", 0.0, [])
    )
    return Result(request_id, segments[-1][0], domain, posterior, candidates, list(segments),
                  False, latency, 0.0, partial=True, mode=REFINE if delivered.draft else DIRECT,
                  draft_segments=delivered.draft)  # fmt: skip


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
        self._pending: set[asyncio.Future] = set()  # records of answers cut short

    async def ask(self, key: KeyRecord, question: Question) -> AsyncIterator[Event]:
        """Routed, text pieces, Switched notes, then Answered; StatusError if refused or
        failed (a refusal before routing: no node heard of the request).

        However it ends, what the client received is paid for: an answer cut short (the client
        left, the deadline passed, the last node failed) is recorded as partial. The gate's
        place is given back only once that record is durable. A client that stops reading is
        cut off: the Ask's task is cancelled a little after its deadline."""
        started = time.perf_counter()
        request_id, release, mode = await self._admit(key, question)
        deadline_s = self.network.router.config.ask_deadline_s
        task = asyncio.current_task()
        watchdog = asyncio.get_running_loop().call_later(deadline_s + STALLED_S, task.cancel)  # type: ignore[union-attr]
        delivered = Delivered()
        routed: Routed | None = None
        answered, outcome = False, "error"
        try:
            async with contextlib.aclosing(
                self._routed(key, question, mode, request_id, started, delivered)
            ) as events:
                async for event in events:
                    if isinstance(event, Routed):
                        routed = event
                    elif isinstance(event, Answered):
                        answered = True
                        outcome = "success" if event.result.verified else "unverified"
                    yield event
        except StatusError as exc:
            outcome = exc.status.lower()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome = outcome if answered else "cancelled"  # closed after its answer: done
            raise
        finally:
            watchdog.cancel()
            partial = None if answered else _partial(request_id, routed, delivered, started)
            if partial is None:
                release()
            else:  # recorded in a task of its own: a cancelled caller cannot stop it
                outcome = "partial"
                pending = asyncio.ensure_future(self._record(question.prompt, partial, key))
                self._pending.add(pending)
                pending.add_done_callback(lambda t: (self._pending.discard(t), release()))
            self.metrics.asks.labels(outcome).inc()
            self.metrics.duration.observe(time.perf_counter() - started)

    def mode(self, question: Question) -> str:
        """The mode an Ask is answered in: a draft is refined; an Ask that names no mode takes
        the hub's default, which falls back to direct when no generalist and refining node
        are connected."""
        if question.mode and question.mode not in (DIRECT, REFINE):
            raise StatusError("INVALID_ARGUMENT", f"mode must be {DIRECT} or {REFINE}, got "
                              f"{question.mode[:32]!r}")  # fmt: skip
        if question.draft is not None:
            if question.mode == DIRECT:
                raise StatusError("INVALID_ARGUMENT", "a draft is refined: ask with mode refine "
                                  "(or none), or leave the draft out")  # fmt: skip
            return REFINE
        router = self.network.router
        if question.mode:
            return question.mode
        default = router.config.mode
        return default if default == DIRECT or router.can_refine(question.domain) else DIRECT

    async def _admit(
        self, key: KeyRecord, question: Question
    ) -> tuple[str, Callable[[], None], str]:
        """(the request id, the function that gives the Ask's place back, the mode)."""
        try:
            mode = self.mode(question)
            self.network.router.validate(question.prompt, question.domain, mode, question.draft)
            idempotent = bool(question.idempotency_key)
            request_id = (request_id_for(key, question.idempotency_key) if idempotent
                          else uuid.uuid4().hex)  # fmt: skip
            # a draft the hub has written is paid for too: up to max_tokens more
            drafting = mode == REFINE and question.draft is None
            cost = self.rewards.price(question.params.max_tokens * (2 if drafting else 1))
            return request_id, await self.gate.enter(key, request_id, cost, idempotent), mode
        except StatusError as exc:
            self.metrics.rejected.labels(reason_of(exc)).inc()
            raise
        except (SLMError, WireError) as exc:
            self.metrics.rejected.labels("invalid_argument").inc()
            raise StatusError("INVALID_ARGUMENT", str(exc)) from None

    async def _routed(
        self, key: KeyRecord, question: Question, mode: str, request_id: str, started: float,
        delivered: Delivered,
    ) -> AsyncIterator[Event]:  # fmt: skip
        network = self.network
        loop = asyncio.get_running_loop()
        deadline = (
            loop.time() + network.router.config.ask_deadline_s - (time.perf_counter() - started)
        )
        events = network.router.ask(question.prompt, question.params, network.priors,
                                    request_id, question.domain, delivered, mode,
                                    question.draft).__aiter__()  # fmt: skip
        network.asks += 1
        first_text = True
        try:
            while True:
                try:  # the deadline in this very task: no task of its own to outlive a cancel
                    async with asyncio.timeout_at(deadline):
                        event = await events.__anext__()
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
        drafted = f", drafted by {result.drafted.by[:16]}" if result.drafted else ""
        log.info("ask %s -> %s node %s, p=%.3f, %d tokens, %.0f ms (hub %.1f ms), key %s%s",
                 result.request_id[:8], result.domain, result.node_id[:12], result.confidence,
                 sum(t for _, t in result.segments), result.latency_ms,
                 result.hub_overhead_ms, key.name, drafted)  # fmt: skip
        return charged
