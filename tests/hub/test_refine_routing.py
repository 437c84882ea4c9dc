"""Refine mode in the router, over in-process links to real NodeServices (trained tiny models;
the refining nodes' refiner writes with their own model): the generalist drafts, the domain
node that fits the prompt best refines it from its reference text, fail-over on either
side, a caller's own draft, and what is paid. The network test with real processes and the
embedded base is tests/hub/test_three_model.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from hub.routing.candidates import ProfileIndex
from hub.routing.config import RouterConfig
from hub.routing.drafts import CALLER, Drafted
from hub.routing.router import REFINE, Result, Router, RoutingError, Switched
from node.identity import generate_key
from node.service import NodeService
from protos.wire import SamplingParams
from slm.refine import Refiner, quote
from slm.retrieval import Reference, passages
from tests.conftest import CORPORA
from tests.hub.test_router import LocalLink

PARAMS = SamplingParams(max_tokens=24, temperature=0)


@dataclass
class Link(LocalLink):
    bad_completion: bool = False  # the last piece's signature is not the node's

    async def generate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        async for piece in super().generate(*args, **kwargs):
            if piece.done and self.bad_completion:
                piece = replace(piece, signature=b"\x00" * len(piece.signature))
            yield piece


def _refiner(domain: str, loaded) -> Refiner:  # type: ignore[no-untyped-def]
    text = (CORPORA / f"{domain}.txt").read_text(encoding="utf-8")
    return Refiner(Reference(passages(text)), loaded.model, loaded.tokenizer)


def _network(trained, generalists: list[dict], refiners: dict[str, list[dict]]) -> Router:  # type: ignore[no-untyped-def]
    """Generalists (religion models, role generalist) and refining nodes by domain, each with
    the keyword arguments of its link."""
    index, links = ProfileIndex(), {}
    nodes = [("religion", kw, True) for kw in generalists]
    nodes += [(d, kw, False) for d, many in refiners.items() for kw in many]
    for domain, kwargs, generalist in nodes:
        loaded = trained[domain].load()
        refiner = None if generalist else _refiner(domain, loaded)
        link = Link(NodeService(loaded, generate_key(), refiner=refiner), domain, **kwargs)
        link.role = "generalist" if generalist else "domain"
        link.refines = not generalist
        links[link.node_id] = link
        index.put(link.node_id, loaded.profile)
    return Router(index, links, RouterConfig(max_prompt_bytes=2000))


def _refine(
    router: Router, prompt: str, draft: str | None = None, priors: dict | None = None
) -> list:
    async def collect() -> list:
        return [e async for e in router.ask(prompt, PARAMS, priors, mode=REFINE, draft=draft)]

    return asyncio.run(collect())


def _text(events: list) -> str:
    return "".join(e for e in events if isinstance(e, str))


def test_the_generalist_drafts_and_the_fitting_domain_node_refines(trained) -> None:
    router = _network(trained, [{}], {"medicine": [{}], "law": [{}]})
    [generalist] = [n for n, link in router.links.items() if link.role == "generalist"]
    prompt = "Acute serous otitis media, recurrent, left ear"
    events = _refine(router, prompt)
    drafted, result = events[0], events[-1]
    assert isinstance(drafted, Drafted) and drafted.by == generalist and drafted.tokens > 0
    assert isinstance(result, Result) and result.mode == REFINE and result.verified
    assert result.domain == "medicine" and generalist not in {c.node_id for c in result.candidates}
    medicine = router.links[result.node_id].service  # type: ignore[attr-defined]
    lead = quote(medicine.refiner.reference, prompt)
    assert lead and _text(events).startswith(lead[:40])  # the answer opens with its fact
    assert result.draft_segments == 1 and result.segments[0] == (generalist, drafted.tokens)
    assert result.drafted == drafted and result.segments[-1][0] == result.node_id


def test_a_callers_draft_is_refined_and_no_generalist_is_asked(trained) -> None:
    router = _network(trained, [{"die_after": 0}], {"medicine": [{}], "law": [{}]})
    events = _refine(router, "Acute serous otitis media", draft="An ear infection, it seems.")
    drafted, result = events[0], events[-1]
    assert drafted == Drafted(CALLER, "An ear infection, it seems.", 0)
    assert result.draft_segments == 0 and [n for n, _ in result.segments] == [result.node_id]


def test_refiners_are_scored_on_the_prompt_not_on_the_draft(trained) -> None:
    """A draft is what its writer imagines the answer to be, in the words of whatever domain it
    imagines: scored with it, refine mode sent 67 of 360 fact questions to another domain's
    node, on the prompt alone 29 (docs/evaluation.md)."""
    router = _network(trained, [{}], {"medicine": [{}], "law": [{}]})
    licence = (CORPORA / "law.txt").read_text(encoding="utf-8")[:1500]
    events = _refine(router, "Acute serous otitis media, recurrent, left ear", draft=licence)
    result = events[-1]
    assert isinstance(result, Result) and result.domain == "medicine"
    assert "law" in {c.domain for c in result.candidates}  # it was scored, and lost


def test_the_refiners_are_scored_while_the_generalist_drafts(trained) -> None:
    """They are scored on the prompt alone, so the hub asks for their scores as the draft
    begins: here the draft waits until both refiners are scored (drafting first and scoring
    after would never finish), and the answer is the same as ever."""
    router = _network(trained, [{}], {"medicine": [{}], "law": [{}]})
    refiners = [link for link in router.links.values() if link.refines]
    [generalist] = [link for link in router.links.values() if not link.refines]
    scored: set[str] = set()

    def noting(link):  # type: ignore[no-untyped-def]
        plain = link.score

        async def score(request_id: str, prompt: str, deadline_s: float):  # type: ignore[no-untyped-def]
            s = await plain(request_id, prompt, deadline_s)
            scored.add(link.node_id)
            return s

        return score

    for link in refiners:
        link.score = noting(link)
    drafting = generalist.generate

    async def generate(*args, **kwargs):  # type: ignore[no-untyped-def]
        async with asyncio.timeout(10):
            while len(scored) < len(refiners):
                await asyncio.sleep(0.01)
        async for piece in drafting(*args, **kwargs):
            yield piece

    generalist.generate = generate
    events = _refine(router, "Acute serous otitis media, recurrent, left ear")
    drafted, result = events[0], events[-1]
    assert isinstance(drafted, Drafted) and drafted.by == generalist.node_id
    assert isinstance(result, Result) and result.domain == "medicine" and result.draft_segments
    assert scored == {link.node_id for link in refiners}


def test_a_generalist_failing_mid_draft_is_replaced(trained) -> None:
    router = _network(trained, [{"die_after": 2}, {"in_flight": 1}], {"medicine": [{}]})
    first = next(link for link in router.links.values() if link.die_after)  # the least loaded
    events = _refine(router, "Malignant neoplasm of the eye")
    drafted, result = events[0], events[-1]
    assert result.draft_segments == 2 and result.segments[0][0] == first.node_id
    assert result.segments[1][0] == drafted.by != first.node_id
    assert drafted.tokens == result.segments[0][1] + result.segments[1][1]
    assert isinstance(result, Result) and result.domain == "medicine" and result.verified


def test_a_refining_node_failing_mid_answer_is_replaced(trained) -> None:
    router = _network(trained, [{}], {"medicine": [{"die_after": 1}, {}]})
    healthy = next(n for n, link in router.links.items() if link.refines and not link.die_after)
    # the same model twice: a lower prior for the healthy one makes the other go first
    events = _refine(router, "Acute serous otitis media, left ear", priors={healthy: 0.5})
    switches = [e for e in events if isinstance(e, Switched)]
    result = events[-1]
    assert len(switches) == 1 and isinstance(result, Result) and result.verified
    assert [n for n, _ in result.segments[result.draft_segments :]] == [
        switches[0].from_node, switches[0].to_node]  # fmt: skip
    assert len(_text(events)) > 20


def test_a_draft_whose_signature_fails_is_used_but_not_paid(trained) -> None:
    router = _network(trained, [{"bad_completion": True}], {"medicine": [{}]})
    events = _refine(router, "Acute serous otitis media")
    drafted, result = events[0], events[-1]
    assert drafted.text and drafted.tokens == 0 and result.segments[0][1] == 0
    assert result.verified  # the refinement is the medicine node's own, and verified


def test_refine_needs_a_refiner_and_someone_to_draft(trained) -> None:
    no_refiner = _network(trained, [{}], {})
    no_refiner.links.update(_network(trained, [], {"medicine": [{}]}).links)
    for link in no_refiner.links.values():
        link.refines = False  # type: ignore[attr-defined]
    with pytest.raises(RoutingError, match="refines drafts") as err:
        _refine(no_refiner, "Otitis media")
    assert err.value.status == "UNAVAILABLE"
    no_generalist = _network(trained, [], {"medicine": [{}]})
    with pytest.raises(RoutingError, match="no generalist") as err:
        _refine(no_generalist, "Otitis media")
    assert err.value.status == "UNAVAILABLE"
    for draft, status in (("  ", "INVALID_ARGUMENT"), ("x" * 3000, "RESOURCE_EXHAUSTED"),
                          ("caf\udce9", "INVALID_ARGUMENT")):  # fmt: skip
        with pytest.raises(RoutingError) as err:
            _refine(no_generalist, "Otitis media", draft=draft)
        assert err.value.status == status and "draft" in str(err.value)
