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
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from hub.errors import StatusError
from hub.routing.candidates import ProfileIndex
from hub.routing.claims import plausible
from hub.routing.config import RouterConfig
from hub.routing.drafts import CALLER, GENERALIST, Drafted, Drafter, draft
from hub.routing.posterior import evidence, posterior, ranked
from hub.routing.relay import Answer, NodeLink, relay
from protos.signing import score_bytes, verify
from protos.wire import SamplingParams, Score
from slm.profile import embed

log = logging.getLogger("slm-hub")


DIRECT, REFINE = "direct", "refine"  # an Ask's modes (swarm.proto Mode)


class RoutingError(StatusError):
    """A request the hub cannot route."""


@dataclass
class Delivered:
    """What an Ask has delivered to its client so far, the basis of what it pays: (node,
    tokens paid for) per segment, in order, the draft's segments first."""

    segments: list[tuple[str, int]] = field(default_factory=list)
    draft: int = 0  # how many of the first segments are the draft's


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
    claimed_similarity: float = 0.0  # the node's signed similarity of the prompt to its centroid
    evidence: float = 0.0  # nats: the loglik, similarity and words, less the node's offsets
    words_loglik: float = 0.0  # the node's signed loglik of the prompt's words


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
    node_ms: float  # the nodes' time on the critical path: slowest score or draft, + generation
    partial: bool = False  # the client left (or the Ask failed) after text was delivered
    mode: str = DIRECT
    drafted: Drafted | None = None  # refine mode: the draft and who wrote it
    draft_segments: int = 0  # how many of `segments` are the draft's (paid like the answer's)

    @property
    def hub_overhead_ms(self) -> float:
        return max(0.0, self.latency_ms - self.node_ms)


# (request id, prompt, plausible scores, impossible scores): what the audit samples and judges
Observe = Callable[[str, str, Mapping[str, Score], Mapping[str, Score]], None]
# (node id, "late" or "failed"): a node asked to score that gave no score in time
Missed = Callable[[str, str], None]


def _stop(task: asyncio.Future) -> None:
    """Cancel a task still running; of one that failed, take the error (another failure, the
    draft's or the client's leaving, is the one reported), so asyncio does not log it."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


@dataclass
class Router:
    index: ProfileIndex
    links: dict[str, NodeLink] = field(default_factory=dict)
    config: RouterConfig = field(default_factory=RouterConfig)
    observe: Observe | None = None  # told every prompt's plausible scores (the audit samples)
    drafter: Drafter | None = None  # the operator's endpoint; else generalist nodes draft
    missed: Missed | None = None  # told every score that was late or failed (the operator's view)

    def validate(
        self, prompt: str, domain: str = "", mode: str = DIRECT, draft: str | None = None
    ) -> None:
        for name, text in (("prompt", prompt), ("draft", draft)):
            if text is not None:
                self._check_text(name, text)
        if not self.links:
            raise RoutingError("UNAVAILABLE", "no node is connected to this hub; try again later")
        if domain and not any(link.domain == domain for link in self.links.values()):
            raise RoutingError("UNAVAILABLE", f"no node of domain {domain!r} is connected")
        if mode != REFINE:
            return
        if not self._refiners(domain):
            raise RoutingError("UNAVAILABLE", "no node that refines drafts is connected"
                               + (f" for domain {domain!r}" if domain else "")
                               + "; ask with mode direct")  # fmt: skip
        if draft is None and not self.can_draft():
            raise RoutingError("UNAVAILABLE", "no generalist is connected to draft the answer; "
                               "bring your own draft, or ask with mode direct")  # fmt: skip

    def _check_text(self, name: str, text: str) -> None:
        if not text.strip():
            raise RoutingError("INVALID_ARGUMENT", f"the {name} is empty")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise RoutingError("INVALID_ARGUMENT", f"the {name} is not valid UTF-8") from None
        if size > self.config.max_prompt_bytes:
            raise RoutingError(
                "RESOURCE_EXHAUSTED",
                f"the {name} is {size} bytes; this hub accepts at most "
                f"{self.config.max_prompt_bytes}",
            )

    def _refiners(self, domain: str = "") -> list[str]:
        return [n for n, link in self.links.items() if link.refines and link.role != GENERALIST
                and (not domain or link.domain == domain)]  # fmt: skip

    def can_draft(self) -> bool:
        return self.drafter is not None or any(
            link.role == GENERALIST for link in self.links.values()
        )

    def can_refine(self, domain: str = "") -> bool:
        """Whether an Ask without a draft could be answered in refine mode now."""
        return self.can_draft() and bool(self._refiners(domain))

    async def rank(
        self, request_id: str, prompt: str, priors: Mapping[str, float], domain: str = "",
        refiners: bool = False,
    ) -> tuple[list[Candidate], dict[str, Score]]:  # fmt: skip
        """Score the profile candidates (of `domain` only, if given; only nodes that refine, if
        `refiners`) in parallel; best non-declined first, the first one's signature verified;
        and the scores, for verifying a runner-up before it takes over."""
        allowed = set(self._refiners(domain)) if refiners else None
        open_ = {
            n: link
            for n, link in self.links.items()
            if (not domain or link.domain == domain) and (allowed is None or n in allowed)
        }
        many = self.config.candidates
        filtered = bool(domain) or refiners  # the top M of those allowed, not of all nodes
        similarity = dict(self.index.top(embed(prompt), len(self.links) if filtered else many))
        chosen = [n for n in similarity if n in open_][:many] or list(open_)[:many]
        links = {n: open_[n] for n in chosen}  # a node may leave while scoring
        scores = await asyncio.gather(*(self._score(links[n], request_id, prompt) for n in chosen))
        size = len(prompt.encode("utf-8"))
        given = {n: s for n, s in zip(chosen, scores, strict=True) if s is not None}
        valid = {n: s for n, s in given.items()  # an impossible claim
                 if plausible(s, size, bool(links[n].centroid_sha256),
                              bool(links[n].words_sha256))}  # fmt: skip
        if self.observe is not None:  # is no claim, and, if signed, its own proof of a lie
            self.observe(request_id, prompt, valid, {n: given[n] for n in given.keys() - valid})
        # Lazily verified: only the winner's signature decides the route, so only the winner's
        # is checked (0.6 ms of CPU each); a winner whose signature fails is dropped and the
        # posterior taken again.
        fit = {n: self._evidence(s, size) for n, s in valid.items()}
        while True:
            post = posterior({n: fit[n] for n, s in valid.items() if not s.declined}, priors,
                             self.config.posterior_temperature)  # fmt: skip
            best = next(iter(ranked(post)), None)
            if best is None or self._verified(links[best[0]], request_id, prompt, valid[best[0]]):
                break
            del valid[best[0]]
        out = [
            Candidate(n, links[n].domain, similarity.get(n, 0.0), valid[n].loglik,
                      post.get(n, 0.0), valid[n].declined, valid[n].node_ms,
                      valid[n].similarity, fit[n], valid[n].words_loglik)
            for n in valid
        ]  # fmt: skip
        order = {n: i for i, (n, _) in enumerate(ranked(post))}
        return sorted(out, key=lambda c: (order.get(c.node_id, len(order)), c.node_id)), valid

    def _evidence(self, s: Score, size: int) -> float:
        return evidence(s.loglik, size, s.similarity, s.offset_loglik, s.offset_similarity,
                        self.config.similarity_weight, s.words_loglik, s.offset_words,
                        self.config.words_weight)  # fmt: skip

    async def _score(self, link: NodeLink, request_id: str, prompt: str) -> Score | None:
        try:
            return await asyncio.wait_for(
                link.score(request_id, prompt, self.config.score_deadline_s),
                self.config.score_deadline_s,
            )
        except TimeoutError:  # skipped, never fatal
            reason = "late"
        except Exception:  # failed or disconnected: skipped, never fatal
            reason = "failed"
        if self.missed is not None:
            self.missed(link.node_id, reason)
        return None

    def _verified(self, link: NodeLink, request_id: str, prompt: str, s: Score) -> bool:
        statement = score_bytes(
            link.node_id, request_id, prompt, s.loglik, s.bits_per_byte, s.confidence,
            s.declined, s.model_version or link.model_version,
            s.centred(link.centroid_sha256, link.words_sha256),
        )  # fmt: skip
        return verify(link.public_key, s.signature, statement)

    async def ask(
        self, prompt: str, params: SamplingParams, priors: Mapping[str, float] | None = None,
        request_id: str = "", domain: str = "", delivered: Delivered | None = None,
        mode: str = DIRECT, draft: str | None = None,
    ) -> AsyncIterator[str | Drafted | Routed | Switched | Result]:  # fmt: skip
        """Yield (refine mode) the Drafted draft, the route (Routed), the answer's text pieces,
        a Switched note per fail-over, then one Result. `domain`: route among that domain's
        nodes only. `delivered`: where each segment's (node, tokens paid for) is put as it
        reaches the client, so a caller whose answer ends early knows what was delivered.
        Refine mode: `draft` is the caller's own, else a generalist writes one while the nodes
        that refine are scored on the prompt alone, and the best refines it. Scored with the
        draft, 67 of 360 fact questions went to another domain's node, on the prompt alone 29
        (docs/evaluation.md): a draft says what its writer imagines, in any domain's words."""
        self.validate(prompt, domain, mode, draft)
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        delivered = delivered if delivered is not None else Delivered()
        drafted = None
        ranking = asyncio.ensure_future(self.rank(request_id, prompt, priors or {}, domain,
                                                  refiners=mode == REFINE))  # fmt: skip
        try:
            if mode == REFINE:
                drafted = (Drafted(CALLER, draft, 0) if draft is not None else
                           await self._draft(request_id, prompt, params, delivered))  # fmt: skip
                yield drafted
            candidates, scores = await ranking
        finally:  # the draft failed or the client left: the scoring stops with it
            _stop(ranking)
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

        # the nodes' time on the critical path: the slowest score or the draft (side by side) ...
        scoring_ms = max((c.node_ms for c in candidates), default=0.0)
        answer = Answer(request_id, prompt, max(scoring_ms, drafted.node_ms if drafted else 0.0),
                        draft=drafted.text if drafted else "")  # fmt: skip
        answer.segments = delivered.segments
        for i, candidate in enumerate(ready):
            link = self.links.get(candidate.node_id)
            if link is None or not usable(candidate):
                continue
            try:  # closed at once if the client hangs up: the node's work is cancelled now
                stream = relay(link, answer, params, self.config.stall_s)
                async with contextlib.aclosing(stream) as relayed:
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
            answer.node_ms, mode=mode, drafted=drafted, draft_segments=delivered.draft,
        )  # fmt: skip

    async def _draft(
        self, request_id: str, prompt: str, params: SamplingParams, delivered: Delivered
    ) -> Drafted:
        """The generalist's draft (hub/routing/drafts.py); its segments join `delivered` once
        it is written: it is then the client's."""
        drafted, segments = await draft(request_id, prompt, params, list(self.links.values()),
                                        self.drafter, self.config.stall_s)  # fmt: skip
        delivered.segments.extend(segments)
        delivered.draft = len(segments)
        return drafted
