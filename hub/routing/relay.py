"""One node's turn at an answer: its stream relayed piece by piece, its claims bounded and its
signature checked, its pay counted by what the hub saw.

The router (answers) and the drafting of refine mode (drafts) relay the same way: an `Answer`
grows across the nodes that stream it, each continuing what the one before left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from hub.routing.claims import Relayed
from protos.signing import completion_bytes, generation_input, verify
from protos.wire import Piece, SamplingParams, Score


class NodeLink(Protocol):
    """One connected node, as the router needs it."""

    node_id: str
    domain: str
    public_key: str
    model_version: str
    role: str  # "domain" or "generalist"
    refines: bool  # it can refine a draft
    centroid_sha256: str  # of the centroid its similarity claims are to ("": it has none)
    words_sha256: str  # of the word counts its words claims are under ("": it has none)
    in_flight: int
    capacity: int

    async def score(self, request_id: str, prompt: str, deadline_s: float) -> Score: ...

    def generate(
        self, request_id: str, prompt: str, params: SamplingParams, draft: str = "",
        answer_so_far: str = "",
    ) -> AsyncIterator[Piece]: ...  # fmt: skip


@dataclass
class Answer:
    """One Ask's answer (or draft) as it grows across the nodes that stream it."""

    request_id: str
    prompt: str
    node_ms: float  # the nodes' own time on the critical path
    draft: str = ""  # refine mode: what the answer refines
    text: str = ""
    segments: list[tuple[str, int]] = field(default_factory=list)  # (node, tokens paid for)
    used: int = 0  # tokens generated so far by the nodes' own counts: the budget's measure
    verified: bool = False


async def relay(
    link: NodeLink, answer: Answer, params: SamplingParams, stall_s: float
) -> AsyncIterator[str]:
    """Stream one node's continuation of the answer so far; its text joins the answer, and
    its tokens as the hub counts them, whether it finishes (its signed count checked against
    what was relayed) or fails (the pieces the client received, never its own count)."""
    so_far = answer.text
    produced = ""
    left = params.max_tokens - answer.used  # the budget is per answer
    seen = Relayed(max(1, left), max((len(s.encode("utf-8")) for s in params.stop), default=0))
    tokens: int | None = None  # set by a signed last piece
    wait = time.perf_counter()
    stream = link.generate(
        answer.request_id, answer.prompt, replace(params, max_tokens=seen.budget), answer.draft,
        so_far,
    ).__aiter__()  # fmt: skip
    node_ms = 0.0
    try:
        while True:
            async with asyncio.timeout(stall_s):  # in this task: a cancel unwinds the node's
                piece = await stream.__anext__()  # stream with it
            seen.add(piece)
            if piece.text:  # the proto allows text on the last piece too
                produced += piece.text
                yield piece.text
            if piece.done:
                statement = completion_bytes(
                    link.node_id, answer.request_id,
                    generation_input(answer.prompt, answer.draft, so_far), produced,
                    piece.tokens, piece.model_version or link.model_version,
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
