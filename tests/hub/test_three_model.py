"""Three-model answers through real processes: a generalist node (the embedded base, role
generalist) drafts, the hub routes the prompt to the domain nodes that refine, the
chosen one quotes its reference text, and the client gets one answer naming and paying both;
over gRPC, the `openai` client, a caller's own draft, fail-over of a drafter and of a refiner
mid-answer, and a second hub drafting through the first hub's OpenAI-compatible endpoint."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import openai
import pytest

from harness import Hub, Node, refine
from harness.processes import stop_all
from harness.rogue import Behaviour, Rogue
from protos import swarm_pb2 as pb
from slm import pretrained
from slm.config import DEFAULT_BASE
from slm.encoder import text_centroid
from slm.import_base import import_base
from slm.model_folder import load_model_folder
from slm.offsets import measured
from slm.train import read_corpus

pytestmark = pytest.mark.slow  # real hubs, nodes serving the pretrained base

CORPORA = Path(__file__).resolve().parents[2] / "data" / "corpora"
LAW = CORPORA / "law.txt"
MEDICINE = CORPORA / "medicine.txt"
LAW_Q = "What does the GNU General Public License say about distributing modified copies?"
MEDICINE_Q = "What is recurrent acute serous otitis media of the right ear?"
MEDICINE_A = "acute serous otitis media, recurrent, right ear"  # a line of its corpus


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def quotes(answer: str, reference: Path, run: int = 6) -> bool:
    """Whether `run` consecutive words of the answer appear, in order, in the reference."""
    said, source = _words(answer), " " + " ".join(_words(read_corpus(reference))) + " "
    return any(" " + " ".join(said[i : i + run]) + " " in source
               for i in range(len(said) - run + 1))  # fmt: skip


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The embedded base imported whole twice: as the generalist's model and as a medicine
    node's (an imported base writes its own refinements). One model version, so its offsets
    are measured once, here (or read from the machine's cache), and both nodes start without
    measuring."""
    base = pretrained.load(DEFAULT_BASE)
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for domain, text in (("general", read_corpus(LAW)[:20_000]),
                         ("medicine", read_corpus(MEDICINE)[:20_000])):  # fmt: skip
        out[domain] = root / domain
        import_base(base, text, domain, out[domain])
    measured(load_model_folder(out["general"], serving="fp32"), None, None)
    return out


@pytest.fixture(scope="module")
def network(imported, law_adapter, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("three-model")
    hub = Hub(root / "hub", 0, "--audit-rate", "0", "--mode", "refine")
    nodes = {
        "generalist": Node(root / "generalist", imported["general"], hub, hub.token("general"),
                           "--role", "generalist"),
        "law": Node(root / "law", law_adapter, hub, hub.token("law"), "--reference", str(LAW)),
        "medicine": Node(root / "medicine", imported["medicine"], hub, hub.token("medicine"),
                         "--reference", str(MEDICINE)),
    }  # fmt: skip
    hub.wait_connected([n.node_id for n in nodes.values()], timeout=180)
    yield hub, nodes
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def test_the_generalist_drafts_the_domain_node_refines_and_both_are_paid(network) -> None:
    hub, nodes = network
    generalist, law = nodes["generalist"].node_id, nodes["law"].node_id
    before = {n: hub.balance(n) for n in (generalist, law)}
    text, switches, drafted, result = refine(hub, LAW_Q, max_tokens=32)  # the hub's default
    assert not switches and drafted is not None and drafted.by == generalist
    assert drafted.text.strip() and 0 < drafted.tokens <= 32
    assert result.mode == pb.MODE_REFINE and result.drafted_by == generalist
    assert result.draft_tokens == drafted.tokens
    assert (result.node_id, result.domain) == (law, "law")
    assert {c.domain for c in result.candidates} == {"law", "medicine"}  # refiners only
    assert quotes(text, LAW) and text != drafted.text  # the domain's own words, from its text
    outcome, segments = hub.inference(result.request_id)
    assert outcome == "success"
    assert segments[0] == {"node": generalist, "tokens": drafted.tokens, "role": "draft"}
    assert segments[-1] == {"node": law, "tokens": result.tokens}
    assert all(hub.balance(n) > before[n] for n in (generalist, law))
    hub.verify_ledger()


def test_the_prompt_goes_to_the_domain_that_knows_it(network) -> None:
    hub, nodes = network
    text, _, drafted, result = refine(hub, MEDICINE_Q, mode="refine", max_tokens=24)
    assert drafted is not None and drafted.by == nodes["generalist"].node_id
    assert result.node_id == nodes["medicine"].node_id and MEDICINE_A in text.lower()
    assert MEDICINE_A not in drafted.text.lower()
    _, _, drafted, result = refine(hub, MEDICINE_Q, mode="direct", max_tokens=4)
    assert drafted is None and result.mode == pb.MODE_DIRECT and not result.drafted_by


def _client(hub: Hub, key: str) -> openai.OpenAI:
    trust = ssl.create_default_context(cafile=str(hub.ca))
    return openai.OpenAI(base_url=hub.base_url, api_key=key, max_retries=0,
                         http_client=openai.DefaultHttpxClient(verify=trust))  # fmt: skip


def test_the_openai_client_streams_a_refined_answer_that_names_both(network) -> None:
    hub, nodes = network
    client = _client(hub, hub.new_key("app", credits="100"))
    stream = client.chat.completions.create(
        model="swarm/auto", messages=[{"role": "user", "content": LAW_Q}], max_tokens=24,
        temperature=0, stream=True, extra_body={"swarm": {"mode": "refine"}},
    )  # fmt: skip
    chunks = list(stream)
    first, last = chunks[0].swarm, chunks[-1].swarm
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert first["mode"] == "refine" and first["draft"]["by"] == nodes["generalist"].node_id
    assert last["node_id"] == nodes["law"].node_id and quotes(text, LAW)
    assert [s["node_id"] for s in last["segments"]] == [nodes["generalist"].node_id,
                                                        nodes["law"].node_id]  # fmt: skip


def test_a_callers_own_draft_is_refined_and_not_paid_to_a_generalist(network) -> None:
    hub, nodes = network
    generalist = nodes["generalist"].node_id
    before = hub.balance(generalist)
    client = _client(hub, hub.new_key("caller", credits="100"))
    mine = "You may distribute modified copies if you follow the licence's conditions."
    chat = client.chat.completions.create(
        model="swarm/auto", messages=[{"role": "user", "content": LAW_Q}], max_tokens=24,
        temperature=0, extra_body={"swarm": {"draft": mine}},
    )  # fmt: skip
    assert chat.swarm["mode"] == "refine" and chat.swarm["draft"]["by"] == "caller"
    assert chat.swarm["node_id"] == nodes["law"].node_id
    assert [s["node_id"] for s in chat.swarm["segments"]] == [nodes["law"].node_id]
    assert hub.balance(generalist) == before
    with pytest.raises(openai.BadRequestError, match="a draft is refined"):
        client.chat.completions.create(
            model="swarm/auto", messages=[{"role": "user", "content": LAW_Q}], max_tokens=4,
            extra_body={"swarm": {"draft": mine, "mode": "direct"}},
        )  # fmt: skip


def test_a_refiner_that_dies_mid_answer_is_replaced_and_the_answer_completes(network) -> None:
    hub, nodes = network
    likely = Behaviour(  # claims to know every prompt far better than anyone, then fails
        loglik=lambda p: -0.3 * len(p.encode()), similarity=lambda p: 0.99, confidence=0.99,
        centroid=tuple(text_centroid(read_corpus(LAW)).tolist()), offset_loglik=-3.0,
        refines=True, pieces=("lorem ",) * 8, fail_after=3,
    )  # fmt: skip
    quitter = Rogue(hub.address, hub.ca.read_bytes(), hub.token("law"), "law", likely).start()
    try:
        text, switches, drafted, result = refine(hub, LAW_Q, mode="refine", max_tokens=24)
    finally:
        quitter.stop()
    assert drafted is not None and drafted.by == nodes["generalist"].node_id
    assert [s.from_node for s in switches] == [quitter.node_id]
    assert text.startswith("lorem lorem lorem ") and len(text) > len("lorem " * 3)
    assert result.node_id == nodes["law"].node_id and result.tokens > 3
    _, segments = hub.inference(result.request_id)
    assert [s["node"] for s in segments] == [drafted.by, quitter.node_id, result.node_id]
    hub.verify_ledger()


def test_a_generalist_that_dies_mid_draft_is_replaced(network) -> None:
    hub, nodes = network
    real = nodes["generalist"].node_id
    token = hub.token("general")
    # generalists draft in order of load, then id: this one is asked first
    quitter = Rogue(hub.address, hub.ca.read_bytes(), token, "general",
                    Behaviour(role="generalist", pieces=("draft ",) * 8, fail_after=2))  # fmt: skip
    while quitter.node_id > real:
        quitter = Rogue(hub.address, hub.ca.read_bytes(), token, "general", quitter.behaviour)
    quitter.start()
    try:
        _, _, drafted, result = refine(hub, LAW_Q, mode="refine", max_tokens=24)
    finally:
        quitter.stop()
    assert drafted is not None and drafted.text.startswith("draft draft ")
    assert len(drafted.text) > len("draft draft ") and drafted.by == real
    assert result.node_id == nodes["law"].node_id
    _, segments = hub.inference(result.request_id)
    assert [s["node"] for s in segments] == [quitter.node_id, real, result.node_id]
    assert [s.get("role") for s in segments] == ["draft", "draft", None]


def test_a_hub_drafts_through_another_hubs_openai_endpoint(network, law_adapter,
                                                           tmp_path_factory) -> None:  # fmt: skip
    first, _ = network
    key = first.new_key("second-hub", credits="100")
    root = tmp_path_factory.mktemp("second")
    second = Hub(root / "hub", 0, "--audit-rate", "0", "--generalist-url", first.base_url,
                 "--generalist-model", "swarm/auto", "--generalist-ca", str(first.ca),
                 env={"SLM_HUB_GENERALIST_KEY": key})  # fmt: skip
    law = Node(root / "law", law_adapter, second, second.token("law"), "--reference", str(LAW))
    try:
        second.wait_connected([law.node_id], timeout=180)
        text, _, drafted, result = refine(second, LAW_Q, mode="refine", max_tokens=24)
        assert drafted is not None and drafted.by == "endpoint:swarm/auto"
        assert drafted.text.strip() and result.node_id == law.node_id and quotes(text, LAW)
        _, segments = second.inference(result.request_id)
        assert segments[0]["role"] == "draft" and segments[0]["tokens"] == drafted.tokens
        second.verify_ledger()
        spent = first.swarm().Balance(pb.BalanceRequest(), metadata=[
            ("authorization", f"Bearer {key}")]).micro_credits  # fmt: skip
        assert spent < 100_000_000  # the first hub charged the second for the draft
    finally:
        law.stop()
        second.stop()
