"""Nodes that cheat, against a real `slm-hub serve` on 127.0.0.1: each rogue joins with a real
key and join token and signs its own lies, so only the hub's checks stand between its claims
and the ledger (harness/rogue.py)."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time

import grpc
import httpx
import pytest

from harness import Hub, ask, cli
from harness.rogue import Behaviour, Rogue
from hub.ledger.rewards import Rewards, split

pytestmark = pytest.mark.slow  # a real hub process

PROMPT = "What does the licence say about distributing modified copies of the program?"
REWARDS = Rewards()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):  # type: ignore[no-untyped-def]
    # no sampled audit: these rogues keep their models, and an audited claim would halve their
    # weight (impossible claims are judged all the same)
    hub = Hub(tmp_path_factory.mktemp("cheating") / "hub", 0, "--audit-rate", "0")
    yield hub
    hub.stop()


@pytest.fixture
def join(hub):  # type: ignore[no-untyped-def]
    """Start rogues on the hub; every one of them leaves when the test ends."""
    started: list[Rogue] = []

    def start(behaviour: Behaviour, domain: str = "law") -> Rogue:
        rogue = Rogue(hub.address, hub.ca.read_bytes(), hub.token(domain), domain, behaviour)
        started.append(rogue.start())
        return rogue

    yield start
    for rogue in started:
        rogue.stop()
    for rogue in started:
        hub.wait_for(r"node " + rogue.node_id[:12] + r" left")


def test_a_signed_claim_of_four_billion_tokens_is_not_paid(hub, join) -> None:
    liar = join(Behaviour(pieces=("word ",) * 4, final_count=2**32 - 1))
    text, _, result = ask(hub, PROMPT, max_tokens=16)
    assert result.node_id == liar.node_id and text == "word " * 4
    assert result.tokens <= 16
    outcome, segments = hub.inference(result.request_id)
    assert outcome == "unverified" and segments == [{"node": liar.node_id, "tokens": 16}]
    assert hub.balance(liar.node_id) <= REWARDS.inference_base + 16 * REWARDS.inference_per_token
    assert hub.balance(liar.node_id) == 0  # recorded, unpaid
    hub.verify_ledger()


def test_a_count_larger_than_the_text_relayed_is_unverified(hub, join) -> None:
    padder = join(Behaviour(pieces=("ab",) * 4, final_count=16))  # 8 bytes cannot be 16 tokens
    _, _, result = ask(hub, PROMPT, max_tokens=16)
    assert result.node_id == padder.node_id
    assert hub.inference(result.request_id)[0] == "unverified"
    assert hub.balance(padder.node_id) == 0


def test_an_honest_count_is_paid_base_plus_its_tokens(hub, join) -> None:
    honest = join(Behaviour(pieces=("one ", "two ", "three"), final_count=3))
    _, _, result = ask(hub, PROMPT, max_tokens=16)
    assert result.node_id == honest.node_id and result.tokens == 3
    assert hub.inference(result.request_id)[0] == "success"
    paid = REWARDS.inference_base + 3 * REWARDS.inference_per_token
    assert hub.balance(honest.node_id) == paid


def test_an_empty_answer_earns_nothing_whatever_it_signs(hub, join) -> None:
    idle = join(Behaviour(pieces=(), final_count=2))  # believable: 0 bytes may be 2 tokens
    text, _, result = ask(hub, PROMPT, max_tokens=16)
    assert result.node_id == idle.node_id and text == ""
    assert hub.inference(result.request_id)[1] == [{"node": idle.node_id, "tokens": 0}]
    assert hub.balance(idle.node_id) == 0  # not even the base


def test_a_node_failing_mid_answer_is_paid_for_the_pieces_the_client_got(hub, join) -> None:
    quitter = join(Behaviour(
        loglik=lambda p: -1.0 * len(p), pieces=("a ",) * 6, counts=(5, 10, 15, 20, 25, 30),
        fail_after=3,
    ))  # fmt: skip
    finisher = join(Behaviour(loglik=lambda p: -3.0 * len(p), pieces=("b ", "c")))
    text, switches, result = ask(hub, PROMPT, max_tokens=32)
    assert [s.from_node for s in switches] == [quitter.node_id]
    assert result.node_id == finisher.node_id and text == "a a a b c"
    outcome, segments = hub.inference(result.request_id)
    assert outcome == "success"
    assert segments == [{"node": quitter.node_id, "tokens": 3}, {"node": finisher.node_id,
                                                                 "tokens": 2}]  # fmt: skip
    total = REWARDS.inference_base + 5 * REWARDS.inference_per_token
    assert hub.balance(quitter.node_id) == split(total, [3, 2])[0]  # not its running 15


def test_a_running_count_past_the_budget_ends_that_node_s_turn(hub, join) -> None:
    greedy = join(Behaviour(loglik=lambda p: -1.0 * len(p), pieces=("x ",) * 3,
                            counts=(1, 2, 2**32 - 1)))  # fmt: skip
    finisher = join(Behaviour(loglik=lambda p: -3.0 * len(p), pieces=("y",)))
    _, switches, result = ask(hub, PROMPT, max_tokens=16)
    assert [s.from_node for s in switches] == [greedy.node_id]
    assert "of 16 asked" in switches[0].reason
    assert result.node_id == finisher.node_id
    assert hub.inference(result.request_id)[1][0] == {"node": greedy.node_id, "tokens": 2}


@pytest.mark.parametrize(
    "lie",
    [
        {"loglik": lambda p: 5.0},  # a probability above 1
        {"loglik": lambda p: 0.0},  # certainty: the audit's 0.0-against--300 liar
        {"loglik": lambda p: float("inf")},
        {"loglik": lambda p: -1.0 * len(p), "bits_per_byte": lambda p, ll: 3.0},  # disagree
        {"loglik": lambda p: -1.0 * len(p), "confidence": 1.5},
    ],
    ids=[
        "positive-loglik",
        "certain",
        "infinite-loglik",
        "bits-per-byte-mismatch",
        "confidence-above-1",
    ],
)
def test_an_impossible_score_never_wins_and_is_its_own_fraud_proof(hub, join, lie) -> None:
    liar = join(Behaviour(**lie))
    honest = join(Behaviour(loglik=lambda p: -3.0 * len(p)))
    _, _, result = ask(hub, PROMPT, max_tokens=4)
    assert result.node_id == honest.node_id
    assert liar.node_id not in {c.node_id for c in result.candidates}
    assert not liar.behaviour.served
    hub.wait_for(r"audit: node " + liar.node_id[:12] + r" false-score .*no model can give")
    assert hub.balance(liar.node_id) == -REWARDS.audit_penalty  # fined, even with no audit
    db = sqlite3.connect(hub.home / "hub.db")
    assert db.execute("SELECT kind FROM fraud_proofs WHERE node_id = ?",
                      (liar.node_id,)).fetchall() == [("false-score",)]  # fmt: skip


def _flower_keys(hub: Hub) -> dict[int, str]:
    """The training plane's registered nodes: Flower node id -> status."""
    from flwr.proto.control_pb2 import ListNodesRequest

    from hub.training.superlink import running_control_client

    client = running_control_client(hub.home)
    try:
        return {n.node_id: n.status for n in client.ListNodes(ListNodesRequest()).nodes_info}
    finally:
        client.close()


def test_a_node_too_slow_to_score_is_routed_around_and_shown_to_the_operator(hub, join) -> None:
    def slow_but_sure(prompt: str) -> float:  # the best claim, past the hub's 2 s deadline
        time.sleep(3)
        return -0.5 * len(prompt.encode("utf-8"))

    slow = join(Behaviour(loglik=slow_but_sure))
    quick = join(Behaviour(pieces=("on ", "time"), final_count=2))  # -2 nats per byte
    _, _, result = ask(hub, PROMPT, max_tokens=4)
    assert result.node_id == quick.node_id
    assert [c.node_id for c in result.candidates] == [quick.node_id]
    hub.wait_for(r"score: node " + slow.node_id[:12] + r" late \(deadline 2 s\)")
    trust = ssl.create_default_context(cafile=str(hub.ca))
    metrics = httpx.get(f"https://127.0.0.1:{hub.http_port}/metrics", verify=trust).text
    missed = [line for line in metrics.splitlines() if line.startswith("swarm_scores_missed_total")]
    assert missed == [f'swarm_scores_missed_total{{node="{slow.node_id[:16]}",reason="late"}} 1.0']


def test_a_revoked_node_is_cut_off_within_a_second(hub, join) -> None:
    victim = join(Behaviour(loglik=lambda p: -1.0 * len(p)))
    other = join(Behaviour(loglik=lambda p: -3.0 * len(p)))
    flower_id = int(hub.wait_for(
        r"node " + victim.node_id[:12] + r" registered on the training plane as (\d+)"
    ).group(1))  # fmt: skip
    assert _flower_keys(hub)[flower_id] != "unregistered"
    assert ask(hub, PROMPT, max_tokens=4)[2].node_id == victim.node_id

    revoked = cli("slm-hub", "node", "revoke", victim.node_id[:10], "--reason", "served spam",
                  "--home", str(hub.home))  # fmt: skip
    assert revoked.returncode == 0 and revoked.stdout.strip() == victim.node_id, revoked.stderr
    since = time.monotonic()
    while victim.ended is None and time.monotonic() - since < 5:
        time.sleep(0.01)
    assert victim.ended == grpc.StatusCode.PERMISSION_DENIED
    assert time.monotonic() - since < 1.0
    served = len(victim.behaviour.served)
    for _ in range(3):
        assert ask(hub, PROMPT, max_tokens=4)[2].node_id == other.node_id
    assert len(victim.behaviour.served) == served

    hub.wait_for(r"node " + victim.node_id[:12] + r": key removed from the training plane")
    assert _flower_keys(hub).get(flower_id, "unregistered") == "unregistered"
    listed = json.loads(cli("slm-hub", "node", "list", "--json", "--home", str(hub.home),
                            check=True).stdout)  # fmt: skip
    [record] = [r for r in listed if r["node_id"] == victim.node_id]
    assert record["revoked"] and record["revoked_reason"] == "served spam"
    assert record["flower_node_id"] is None
    again = Rogue(hub.address, hub.ca.read_bytes(), hub.token("law"), "law", Behaviour(),
                  key=victim.key)  # fmt: skip
    with pytest.raises(ConnectionError, match="revoked by the hub operator"):
        again.start()


def test_revoking_an_unknown_or_ambiguous_node_is_one_clear_line(hub) -> None:
    unknown = cli("slm-hub", "node", "revoke", "zzzz", "--home", str(hub.home))
    assert unknown.returncode != 0 and "no node 'zzzz'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
