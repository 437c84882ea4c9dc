"""Refine mode's first step: a generalist drafts the answer the domain nodes will refine.

The draft comes from the operator's OpenAI-compatible endpoint when the hub has one
(hub/routing/endpoint.py), else (or when it fails) from the nodes that joined as generalists:
least loaded first, the next continuing what a failed one began, as in any fail-over
(hub/routing/relay.py). The draft's segments are paid like an answer's; a generalist whose
draft does not verify (a bad signature, a token count its text cannot hold) is not paid.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from hub.errors import StatusError
from hub.routing.relay import Answer, NodeLink, relay
from protos.wire import SamplingParams

log = logging.getLogger("slm-hub")

GENERALIST = "generalist"  # a node's role when it drafts rather than answers by confidence
CALLER = "caller"  # who drafted, when the client brought its own draft


class Drafter(Protocol):
    """An OpenAI-compatible endpoint the operator drafts with (hub/routing/endpoint.py)."""

    name: str  # "endpoint:<model>": who drafted (the hub's account is paid for it)

    async def draft(self, prompt: str, params: SamplingParams) -> tuple[str, int]: ...


@dataclass(frozen=True)
class Drafted:
    """Refine mode, before any text: the draft being refined and who wrote it."""

    by: str  # a generalist node's id, a Drafter's name, or CALLER
    text: str
    tokens: int  # paid for (0: the caller's own)
    node_ms: float = 0.0  # the drafter's own time (for an endpoint, the whole call)


async def draft(
    request_id: str, prompt: str, params: SamplingParams, links: Iterable[NodeLink],
    drafter: Drafter | None, stall_s: float,
) -> tuple[Drafted, list[tuple[str, int]]]:  # fmt: skip
    """The draft and its segments (who is paid for how many tokens); StatusError UNAVAILABLE
    when no generalist wrote a word of it."""
    if drafter is not None:
        began = time.perf_counter()
        try:
            text, tokens = await drafter.draft(prompt, params)
        except Exception as exc:  # the endpoint failed: generalist nodes, if any, draft
            log.warning("the generalist endpoint failed: %s", exc)
        else:
            took = (time.perf_counter() - began) * 1000
            return Drafted(drafter.name, text, tokens, took), [(drafter.name, tokens)]
    answer = Answer(request_id, prompt, 0.0)
    generalists = sorted(
        (link for link in links if link.role == GENERALIST),
        key=lambda link: (link.in_flight / max(link.capacity, 1), link.node_id),
    )
    for link in generalists:
        try:
            async with contextlib.aclosing(relay(link, answer, params, stall_s)) as pieces:
                async for _ in pieces:
                    pass
        except Exception as exc:  # the next generalist continues the draft
            log.warning("generalist %s failed mid-draft: %s", link.node_id[:12], exc)
            if answer.used >= params.max_tokens:
                break
            continue
        if not answer.verified:
            answer.segments[-1] = (link.node_id, 0)
        break
    if not answer.text.strip():
        raise StatusError("UNAVAILABLE", "no generalist could draft the answer; bring your own "
                          "draft, or ask with mode direct")  # fmt: skip
    tokens = sum(t for _, t in answer.segments)
    return Drafted(answer.segments[-1][0], answer.text, tokens, answer.node_ms), answer.segments
