"""The router over in-process links to real NodeServices (trained tiny models): routing by
domain, verified scores, fail-over mid-answer, and request validation. The transport is the
routing server's and is tested there with real processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from hub.routing.candidates import ProfileIndex
from hub.routing.config import RouterConfig
from hub.routing.router import Result, Router, RoutingError, Switched
from node.identity import generate_key
from node.service import NodeService
from protos.wire import Piece, SamplingParams, Score

PARAMS = SamplingParams(max_tokens=24, temperature=0)


@dataclass
class LocalLink:
    service: NodeService
    domain: str
    die_after: int | None = None  # pieces, then the node "disconnects"
    forge: bool = False
    bad_signature: bool = False  # an honest loglik under a signature that is not the node's
    leave_while_scoring: dict | None = None  # the router's links: remove itself after scoring
    role: str = "domain"
    refines: bool = False
    in_flight: int = 0
    capacity: int = 1
    score_delay_s: float = 0.0  # a node too slow for the deadline
    score_error: bool = False  # a node whose score fails

    @property
    def centroid_sha256(self) -> str:
        return self.service.centroid_sha256

    @property
    def words_sha256(self) -> str:
        return self.service.words_sha256

    @property
    def node_id(self) -> str:
        return self.service.node_id

    @property
    def public_key(self) -> str:
        return self.service.public_key

    @property
    def model_version(self) -> str:
        return self.service.loaded.version

    async def score(self, request_id: str, prompt: str, deadline_s: float) -> Score:
        await asyncio.sleep(self.score_delay_s)
        if self.score_error:
            raise ConnectionError("node disconnected")
        s = await asyncio.to_thread(self.service.score, request_id, prompt)
        if self.leave_while_scoring is not None:
            self.leave_while_scoring.pop(self.node_id, None)
        loglik = s.loglik + 1000 if self.forge else s.loglik  # a claim its signature won't cover
        signature = b"\x00" * len(s.signature) if self.bad_signature else s.signature
        return replace(s, loglik=loglik, signature=signature)

    async def generate(
        self, request_id: str, prompt: str, params: SamplingParams, draft: str = "",
        answer_so_far: str = "",
    ) -> AsyncIterator[Piece]:  # fmt: skip
        chunks = await asyncio.to_thread(
            lambda: list(self.service.generate(request_id, prompt, params, draft, answer_so_far))
        )
        for i, piece in enumerate(chunks):
            if self.die_after is not None and i >= self.die_after:
                raise ConnectionError("node disconnected")
            yield piece


def _router(trained, **links_kwargs) -> Router:
    index = ProfileIndex()
    links = {}
    for domain in ("medicine", "law"):
        loaded = trained[domain].load()
        link = LocalLink(
            NodeService(loaded, generate_key()), domain, **links_kwargs.get(domain, {})
        )
        links[link.node_id] = link
        index.put(link.node_id, loaded.profile)
    return Router(index, links, RouterConfig(max_prompt_bytes=2000))


def _ask(router: Router, prompt: str) -> list:
    async def collect() -> list:
        return [event async for event in router.ask(prompt, PARAMS)]

    return asyncio.run(collect())


def test_prompts_reach_the_node_of_their_domain_with_a_verified_answer(trained) -> None:
    router = _router(trained)
    for domain in ("medicine", "law"):
        events = _ask(router, trained[domain].held_out[:300])
        result = events[-1]
        assert isinstance(result, Result) and result.domain == domain
        assert result.verified and result.confidence > 0.5
        assert "".join(e for e in events if isinstance(e, str))
        assert result.candidates[0].node_id == result.node_id


def test_a_runner_up_whose_score_is_not_its_own_never_takes_over(trained) -> None:
    """Only the winner's score is verified up front; a runner-up's is checked before a
    fail-over reaches it, and one that fails is skipped."""
    router = _router(trained, medicine={"die_after": 3}, law={"bad_signature": True})
    with pytest.raises(RoutingError, match="no other node can continue"):
        _ask(router, trained["medicine"].held_out[:300])


def test_a_node_that_dies_mid_answer_is_replaced_by_the_next_best(trained) -> None:
    router = _router(trained, medicine={"die_after": 3})
    events = _ask(router, trained["medicine"].held_out[:300])
    switches = [e for e in events if isinstance(e, Switched)]
    result = events[-1]
    assert len(switches) == 1 and "disconnected" in switches[0].reason
    assert isinstance(result, Result) and result.domain == "law" and result.verified
    assert [n for n, _ in result.segments] == [switches[0].from_node, switches[0].to_node]
    assert sum(1 for e in events if isinstance(e, str)) > 3


def test_a_node_leaving_while_others_still_score_is_not_an_error(trained) -> None:
    router = _router(trained)
    law = next(link for link in router.links.values() if link.domain == "law")
    law.leave_while_scoring = router.links  # it scores, then disconnects before the ranking
    events = _ask(router, trained["medicine"].held_out[:300])
    assert isinstance(events[-1], Result) and events[-1].domain == "medicine"


def test_a_score_its_signature_does_not_cover_is_ignored(trained) -> None:
    router = _router(trained, law={"forge": True})  # law claims +1000 nats on medicine text
    result = _ask(router, trained["medicine"].held_out[:300])[-1]
    assert result.domain == "medicine"
    assert [c.domain for c in result.candidates] == ["medicine"]


@pytest.mark.parametrize(
    ("lapse", "reason"), [({"score_delay_s": 60.0}, "late"), ({"score_error": True}, "failed")]
)
def test_a_node_that_gives_no_score_in_time_is_routed_around_and_reported(
    trained, lapse: dict, reason: str
) -> None:  # fmt: skip
    router = _router(trained, medicine=lapse)
    missed: list[tuple[str, str]] = []
    router.missed = lambda node_id, why: missed.append((node_id, why))
    result = _ask(router, trained["medicine"].held_out[:300])[-1]
    medicine = next(n for n, link in router.links.items() if link.domain == "medicine")
    assert result.domain == "law" and [c.domain for c in result.candidates] == ["law"]
    assert missed == [(medicine, reason)]


@pytest.mark.parametrize(
    ("prompt", "status"),
    [("", "INVALID_ARGUMENT"), ("   ", "INVALID_ARGUMENT"), ("x" * 3000, "RESOURCE_EXHAUSTED"),
     ("caf\udce9", "INVALID_ARGUMENT")],
)  # fmt: skip
def test_bad_prompts_get_a_precise_status(trained, prompt: str, status: str) -> None:
    with pytest.raises(RoutingError) as err:
        _ask(_router(trained), prompt)
    assert err.value.status == status


def test_no_nodes_is_unavailable() -> None:
    with pytest.raises(RoutingError) as err:
        _ask(Router(ProfileIndex()), "hello")
    assert err.value.status == "UNAVAILABLE"
