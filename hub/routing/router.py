"""Routing one prompt: candidates, signed scores, posterior, streamed answer with fail-over.

Transport-free: the routing server gives the router one `NodeLink` per connected node (in the
server, a request multiplexed on that node's stream) and turns the events `ask` yields (text,
`Switched`, one `Result`) into `AskReply` messages. The winning score and every completion
are checked against the node's signature before they count; a runner-up's score is checked
only if a fail-over reaches it, before it is handed the answer. Claims are bounded first
(`claims`): an impossible score never enters the posterior, and a node is paid for the tokens
the hub relayed, not for the count it asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from hub.errors import StatusError
from hub.routing.candidates import ProfileIndex
from hub.routing.claims import Relayed, plausible
from hub.routing.config import RouterConfig
from hub.routing.posterior import posterior, ranked
from protos.signing import completion_bytes, score_bytes, verify
from protos.wire import Piece, SamplingParams, Score
from slm.profile import embed


class RoutingError(StatusError):
    """A request the hub cannot route."""


class NodeLink(Protocol):
    """One connected node, as the router needs it."""

    node_id: str
    domain: str
    public_key: str
    model_version: str

    async def score(self, request_id: str, prompt: str, deadline_s: float) -> Score: ...

    def generate(
        self, request_id: str, prompt: str, params: SamplingParams
    ) -> AsyncIterator[Piece]: ...


@dataclass(frozen=True)
class Routed:
    """The route, before the first piece of text: who answers and who else was scored."""

    request_id: str
    node_id: str
    domain: str
    posterior: float
    candidates: list[Candidate]


@dataclass(frozen=True)
class Switched:
    from_node: str
    to_node: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    node_id: str
    domain: str
    similarity: float
    loglik: float
    posterior: float
    declined: bool
    node_ms: float = 0.0  # the node's own time on the score


@dataclass
class Result:
    request_id: str
    node_id: str
    domain: str
    confidence: float
    candidates: list[Candidate]
    segments: list[tuple[str, int]]  # (node, tokens it delivered), in order
    verified: bool
    latency_ms: float
    node_ms: float  # the nodes' own time on the critical path (slowest score + generation)
    partial: bool = False  # the client left (or the Ask failed) after text was delivered

    @property
    def hub_overhead_ms(self) -> float:
        return max(0.0, self.latency_ms - self.node_ms)


# (request id, prompt, plausible scores, impossible scores): what the audit samples and judges
Observe = Callable[[str, str, Mapping[str, Score], Mapping[str, Score]], None]


@dataclass
class Router:
    index: ProfileIndex
    links: dict[str, NodeLink] = field(default_factory=dict)
    config: RouterConfig = field(default_factory=RouterConfig)
    observe: Observe | None = None  # told every prompt's plausible scores (the audit samples)

    def validate(self, prompt: str, domain: str = "") -> None:
        if not prompt.strip():
            raise RoutingError("INVALID_ARGUMENT", "the prompt is empty")
        try:
            size = len(prompt.encode("utf-8"))
        except UnicodeEncodeError:
            raise RoutingError("INVALID_ARGUMENT", "the prompt is not valid UTF-8") from None
        if size > self.config.max_prompt_bytes:
            raise RoutingError(
                "RESOURCE_EXHAUSTED",
                f"the prompt is {size} bytes; this hub accepts at most "
                f"{self.config.max_prompt_bytes}",
            )
        if not self.links:
            raise RoutingError("UNAVAILABLE", "no node is connected to this hub; try again later")
        if domain and not any(link.domain == domain for link in self.links.values()):
            raise RoutingError("UNAVAILABLE", f"no node of domain {domain!r} is connected")

    async def rank(
        self, request_id: str, prompt: str, priors: Mapping[str, float], domain: str = ""
    ) -> tuple[list[Candidate], dict[str, Score]]:
        """Score the profile candidates (of `domain` only, if given) in parallel; best
        non-declined first, the first one's signature verified; and the scores, for verifying a
        runner-up before it takes over."""
        open_ = {n: link for n, link in self.links.items() if not domain or link.domain == domain}
        many = self.config.candidates
        similarity = dict(self.index.top(embed(prompt), len(self.links) if domain else many))
        chosen = [n for n in similarity if n in open_][:many] or list(open_)[:many]
        links = {n: open_[n] for n in chosen}  # a node may leave while scoring
        scores = await asyncio.gather(*(self._score(links[n], request_id, prompt) for n in chosen))
        size = len(prompt.encode("utf-8"))
        given = {n: s for n, s in zip(chosen, scores, strict=True) if s is not None}
        valid = {n: s for n, s in given.items() if plausible(s, size)}  # an impossible claim
        if self.observe is not None:  # is no claim, and, if signed, its own proof of a lie
            self.observe(request_id, prompt, valid, {n: given[n] for n in given.keys() - valid})
        # Lazily verified: only the winner's signature decides the route, so only the winner's
        # is checked (0.6 ms of CPU each); a winner whose signature fails is dropped and the
        # posterior taken again.
        while True:
            post = posterior({n: s.loglik for n, s in valid.items() if not s.declined}, priors,
                             self.config.posterior_temperature)  # fmt: skip
            best = next(iter(ranked(post)), None)
            if best is None or self._verified(links[best[0]], request_id, prompt, valid[best[0]]):
                break
            del valid[best[0]]
        out = [
            Candidate(n, links[n].domain, similarity.get(n, 0.0), valid[n].loglik,
                      post.get(n, 0.0), valid[n].declined, valid[n].node_ms)
            for n in valid
        ]  # fmt: skip
        order = {n: i for i, (n, _) in enumerate(ranked(post))}
        return sorted(out, key=lambda c: (order.get(c.node_id, len(order)), c.node_id)), valid

    async def _score(self, link: NodeLink, request_id: str, prompt: str) -> Score | None:
        try:
            return await asyncio.wait_for(
                link.score(request_id, prompt, self.config.score_deadline_s),
                self.config.score_deadline_s,
            )
        except Exception:  # late, failed or disconnected: skipped, never fatal
            return None

    def _verified(self, link: NodeLink, request_id: str, prompt: str, s: Score) -> bool:
        statement = score_bytes(
            link.node_id, request_id, prompt, s.loglik, s.bits_per_byte, s.confidence,
            s.declined, s.model_version or link.model_version,
        )  # fmt: skip
        return verify(link.public_key, s.signature, statement)

    async def ask(
        self, prompt: str, params: SamplingParams, priors: Mapping[str, float] | None = None,
        request_id: str = "", domain: str = "", segments: list[tuple[str, int]] | None = None,
    ) -> AsyncIterator[str | Routed | Switched | Result]:  # fmt: skip
        """Yield the route (Routed), the answer's text pieces, a Switched note per fail-over,
        then one Result. `domain`: route among that domain's nodes only. `segments`: a list the
        answer's (node, tokens paid for) are appended to as each node's turn ends, so a caller
        whose answer ends early knows what was delivered."""
        self.validate(prompt, domain)
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        candidates, scores = await self.rank(request_id, prompt, priors or {}, domain)
        ready = [c for c in candidates if c.posterior > 0]
        if not ready:
            raise RoutingError(
                "UNAVAILABLE", "no node could answer: every candidate failed or declined"
            )
        checked = {ready[0].node_id: True}  # rank verified the winner
        first = ready[0]
        yield Routed(request_id, first.node_id, first.domain, first.posterior, candidates)

        def usable(c: Candidate) -> bool:
            """Connected, and (checked on first need) its score is really its own."""
            link = self.links.get(c.node_id)
            if link is None:
                return False
            if c.node_id not in checked:
                checked[c.node_id] = self._verified(link, request_id, prompt, scores[c.node_id])
            return checked[c.node_id]

        # the nodes' time on the critical path: the slowest score (they run in parallel) ...
        answer = _Answer(request_id, prompt, max((c.node_ms for c in candidates), default=0.0))
        if segments is not None:
            answer.segments = segments
        for i, candidate in enumerate(ready):
            link = self.links.get(candidate.node_id)
            if link is None or not usable(candidate):
                continue
            try:  # closed at once if the client hangs up: the node's work is cancelled now
                async with contextlib.aclosing(self._relay(link, answer, params)) as relayed:
                    async for text in relayed:
                        yield text
            except Exception as exc:  # a failed, stalled (TimeoutError) or vanished node
                if answer.used >= params.max_tokens:  # it sent all it may: the answer ends here
                    break
                nxt = next((c.node_id for c in ready[i + 1 :] if usable(c)), None)
                if nxt is None:
                    raise RoutingError(
                        "UNAVAILABLE",
                        f"node {link.node_id} failed mid-answer and no other node can continue",
                    ) from exc
                reason = "stalled" if isinstance(exc, TimeoutError) else f"failed: {exc}"
                yield Switched(link.node_id, nxt, reason)
                continue
            break
        else:
            raise RoutingError("UNAVAILABLE", "every candidate node disconnected")
        yield Result(
            request_id, link.node_id, link.domain, candidate.posterior, candidates,
            answer.segments, answer.verified, (time.perf_counter() - started) * 1000,
            answer.node_ms,
        )  # fmt: skip

    async def _relay(
        self, link: NodeLink, answer: _Answer, params: SamplingParams
    ) -> AsyncIterator[str]:
        """Stream one node's continuation of the answer so far; its text joins the answer, and
        its tokens as the hub counts them, whether it finishes (its signed count checked against
        what was relayed) or fails (the pieces the client received, never its own count)."""
        continued = answer.prompt + answer.text
        produced = ""
        left = params.max_tokens - answer.used  # the budget is per answer
        seen = Relayed(max(1, left), max((len(s.encode("utf-8")) for s in params.stop), default=0))
        tokens: int | None = None  # set by a signed last piece
        wait = time.perf_counter()
        stream = link.generate(
            answer.request_id, continued, replace(params, max_tokens=seen.budget)
        ).__aiter__()
        node_ms = 0.0
        try:
            while True:
                async with asyncio.timeout(self.config.stall_s):  # in this task: a cancel
                    piece = await stream.__anext__()  # unwinds the node's stream with it
                seen.add(piece)
                if piece.text:  # the proto allows text on the last piece too
                    produced += piece.text
                    yield piece.text
                if piece.done:
                    statement = completion_bytes(
                        link.node_id, answer.request_id, continued, produced, piece.tokens,
                        piece.model_version or link.model_version,
                    )  # fmt: skip
                    signed = verify(link.public_key, piece.signature, statement)
                    answer.verified = signed and seen.agrees(piece.tokens)
                    tokens = seen.paid(piece.tokens)
                    node_ms = piece.node_ms
                    return
        finally:
            answer.node_ms += node_ms or (time.perf_counter() - wait) * 1000
            paid = seen.paid_unsigned() if tokens is None else tokens
            answer.segments.append((link.node_id, paid))
            answer.used += max(paid, seen.count, seen.chunks)
            answer.text += produced
            await stream.aclose()  # type: ignore[attr-defined]


@dataclass
class _Answer:
    """One Ask's answer as it grows across the nodes that stream it."""

    request_id: str
    prompt: str
    node_ms: float  # the nodes' own time on the critical path
    text: str = ""
    segments: list[tuple[str, int]] = field(default_factory=list)  # (node, tokens paid for)
    used: int = 0  # tokens generated so far by the nodes' own counts: the budget's measure
    verified: bool = False
