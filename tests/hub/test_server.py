"""The routing plane with real processes on 127.0.0.1: `slm-hub serve` over TLS and three
`slm-node join` processes (medicine, law, religion), as a user runs them.

The tests share one network and run in file order: the last ones kill a node mid-answer and
restart the hub, so they come after the ones that need all three nodes.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import Hub, Node, ask, cli, free_port
from harness.processes import stop_all
from node.identity import generate_key, public_openssh
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.signing import challenge_bytes, sign
from slm.profile import PROFILE_DIM

pytestmark = pytest.mark.slow  # real hub and node processes

DOMAINS = ("medicine", "law", "religion")


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("network")
    hub = Hub(root / "hub")
    nodes = {d: Node(root / f"node-{d}", trained[d].folder, hub, hub.token(d)) for d in DOMAINS}
    hub.wait_connected([n.node_id for n in nodes.values()])
    yield hub, nodes
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def test_each_domain_prompt_reaches_the_node_of_that_domain(network, trained) -> None:
    hub, nodes = network
    for domain in DOMAINS:
        text, switches, result = ask(hub, trained[domain].held_out[:300], max_tokens=24, seed=1)
        assert result.domain == domain and result.node_id == nodes[domain].node_id
        assert text and result.tokens > 0 and not switches
        assert result.candidates[0].node_id == result.node_id
        assert {c.domain for c in result.candidates} == set(DOMAINS)
        assert sum(c.posterior for c in result.candidates) == pytest.approx(1.0)
        assert 0 < result.hub_overhead_ms < result.latency_ms
        served = nodes[domain].wait_for(r"generate " + result.request_id[:8])
        assert "tokens" in served.string  # the node logs each request it serves


def test_answers_are_credited_and_node_owners_see_their_balance(network, trained) -> None:
    hub, nodes = network
    _, _, result = ask(hub, trained["law"].held_out[:200], max_tokens=8)
    stub = hub.swarm()
    balance = stub.Balance(pb.BalanceRequest(node_id=result.node_id[:8]), metadata=hub.metadata)
    assert balance.node_id == nodes["law"].node_id and balance.micro_credits > 0
    with pytest.raises(grpc.RpcError) as refused:
        stub.Balance(pb.BalanceRequest(node_id="ffffffffffff"), metadata=hub.metadata)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    verified = cli("slm-hub", "ledger", "verify", "--home", str(hub.home))
    assert verified.returncode == 0, verified.stderr
    db = sqlite3.connect(hub.home / "hub.db")
    (outcome,) = db.execute(
        "SELECT outcome FROM inferences WHERE request_id = ?", (result.request_id,)
    ).fetchone()
    assert outcome == "success"  # the completion's signature checked out


def test_list_nodes_health_and_the_nodes_table(network) -> None:
    hub, nodes = network
    listed = hub.nodes()
    assert {listed[n.node_id].domain for n in nodes.values()} == set(DOMAINS)
    assert all(listed[n.node_id].connected for n in nodes.values())
    health = health_pb2_grpc.HealthStub(hub.channel())
    for service in ("", "swarmllm.v2.Swarm"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    table = cli("slm-hub", "nodes", "--hub", hub.address, "--home", str(hub.home))
    assert table.returncode == 0, table.stderr
    assert "3 nodes known, 3 connected" in table.stdout
    assert all(d in table.stdout for d in DOMAINS)


def _raw_ask(hub: Hub, encoded: bytes) -> grpc.RpcError:
    """Send bytes no protobuf library would build (e.g. a prompt that is not UTF-8)."""
    call = hub.channel().unary_stream(
        "/swarmllm.v2.Swarm/Ask", request_serializer=lambda b: b,
        response_deserializer=pb.AskReply.FromString,
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as failed:
        list(call(encoded, timeout=30))
    return failed.value


@pytest.mark.parametrize(
    ("prompt", "sampling", "code", "words"),
    [
        ("", {}, "INVALID_ARGUMENT", "empty"),
        ("   \n", {}, "INVALID_ARGUMENT", "empty"),
        ("x" * 20_000, {}, "RESOURCE_EXHAUSTED", "at most 16384"),
        ("law", {"max_tokens": 5000}, "INVALID_ARGUMENT", "max_tokens"),
        ("law", {"max_tokens": 0}, "INVALID_ARGUMENT", "max_tokens"),  # 0 is a value, refused
        ("law", {"top_p": 1.5}, "INVALID_ARGUMENT", "top_p"),
        ("law", {"temperature": -1}, "INVALID_ARGUMENT", "temperature"),
        ("law", {"stop": [""]}, "INVALID_ARGUMENT", "stop strings"),
    ],
)
def test_bad_asks_get_precise_statuses(network, prompt, sampling, code, words) -> None:
    hub, _ = network
    request = pb.AskRequest(prompt=prompt, sampling=pb.SamplingParams(**sampling))
    with pytest.raises(grpc.RpcError) as failed:
        list(hub.swarm().Ask(request, timeout=30, metadata=hub.metadata))
    assert failed.value.code() == grpc.StatusCode[code]
    assert words in failed.value.details()


def test_a_prompt_that_is_not_utf8_is_invalid_argument(network) -> None:
    hub, _ = network
    not_utf8 = b"\x0a\x04\xff\xfe\xfd\xfc"  # field 1 (prompt), 4 bytes
    error = _raw_ask(hub, not_utf8)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in error.details()


def test_the_ask_cli_streams_then_explains_and_fails_in_one_line(network, trained) -> None:
    hub, nodes = network
    common = ("--hub", hub.address, "--home", str(hub.home))
    done = cli("slm-hub", "ask", trained["religion"].held_out[:200], "--max-tokens", "12",
                   *common)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the answer, alone on stdout
    assert f"answered by {nodes['religion'].node_id[:16]} (religion)" in done.stderr
    for bad, words in (
        (("",), "INVALID_ARGUMENT: the prompt is empty"),
        (("law", "--max-tokens", "5000"), "max_tokens must be between 1 and 4096, got 5000"),
        (("x" * 20_000,), "RESOURCE_EXHAUSTED"),
    ):
        failed = cli("slm-hub", "ask", *bad, *common)
        assert failed.returncode == 1
        assert failed.stderr.strip().count("\n") == 0 and words in failed.stderr, failed.stderr
    unreachable = cli("slm-hub", "ask", "law", "--hub", f"127.0.0.1:{free_port()}",
                          "--home", str(hub.home))  # fmt: skip
    assert unreachable.returncode == 1 and "cannot reach the hub" in unreachable.stderr


async def _join_by_hand(hub: Hub, token: str, forge: bool = False, replay: bytes | None = None):  # type: ignore[no-untyped-def]
    """Speak NodeLink directly: hello, then a proof that is forged, replayed or honest."""
    key = generate_key()
    public = public_openssh(key).decode()
    creds = grpc.ssl_channel_credentials(hub.ca.read_bytes())
    async with grpc.aio.secure_channel(hub.address, creds) as channel:
        call = rpc.NodeLinkStub(channel).Connect()
        profile = [1.0] + [0.0] * (PROFILE_DIM - 1)
        await call.write(pb.NodeMessage(hello=pb.Hello(
            public_key=public, join_token=token, domain="law", profile=profile,
            model_version="0123456789abcdef", capacity=1, preset="slm-tiny",
        )))  # fmt: skip
        challenge = await call.read()
        signature = sign(generate_key() if forge else key,
                         challenge_bytes(challenge.challenge.nonce, public))  # fmt: skip
        await call.write(pb.NodeMessage(proof=pb.Proof(signature=replay or signature)))
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details(), signature
        await call.done_writing()
        return reply.WhichOneof("body"), "", signature


def test_nodes_without_a_valid_token_or_signature_are_refused(network, trained, tmp_path) -> None:
    hub, _ = network
    bad_token = Node(tmp_path / "intruder", trained["law"].folder, hub, "slmj_not-a-token")
    assert bad_token.proc.wait(60) == 1
    assert "refused this node: unknown join token" in bad_token.output

    code, details, _ = asyncio.run(_join_by_hand(hub, hub.token("law"), forge=True))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not this key's signature" in details
    code, details, _ = asyncio.run(_join_by_hand(hub, hub.token("medicine")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "for domain 'medicine'" in details
    token = hub.token("law")
    code, _, old_proof = asyncio.run(_join_by_hand(hub, token))
    assert code == "welcome"
    code, details, _ = asyncio.run(_join_by_hand(hub, token, replay=old_proof))
    assert code == grpc.StatusCode.UNAUTHENTICATED  # a proof is good for one challenge only
    code, details, _ = asyncio.run(_join_by_hand(hub, ""))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown to the hub" in details


def test_a_node_killed_mid_answer_is_replaced_by_the_next_best(network, trained) -> None:
    hub, nodes = network
    victim = nodes["religion"]
    sampling = pb.SamplingParams(max_tokens=600, temperature=0.8, seed=3)
    replies = hub.swarm().Ask(
        pb.AskRequest(prompt=trained["religion"].held_out[:300], sampling=sampling),
        timeout=120,
        metadata=hub.metadata,
    )
    first = next(replies)
    assert first.WhichOneof("body") == "text"
    victim.proc.kill()
    rest = list(replies)
    switched = [r.switched for r in rest if r.WhichOneof("body") == "switched"]
    result = rest[-1].result
    assert len(switched) == 1 and switched[0].from_node == victim.node_id
    assert result.node_id == switched[0].to_node != victim.node_id
    text = first.text + "".join(r.text for r in rest if r.WhichOneof("body") == "text")
    assert len(text) > len(first.text) and result.tokens <= 600
    hub.wait_for(r"node " + victim.node_id[:12] + r" left")


def test_a_restarted_hub_keeps_its_registry_and_nodes_come_back(network) -> None:
    hub, nodes = network
    alive = [n for n in nodes.values() if n.proc.poll() is None]
    dead = [n for n in nodes.values() if n.proc.poll() is not None]
    assert len(alive) == 2 and len(dead) == 1
    assert hub.stop() == 0
    marks = {n.node_id: len(n.lines) for n in alive}
    restarted = Hub(hub.home, hub.port)
    try:
        restarted.wait_connected([n.node_id for n in alive], timeout=60)
        listed = restarted.nodes()
        assert not listed[dead[0].node_id].connected  # known from the registry, not connected
        assert len(listed) == 4  # three nodes + the hand-made one admitted earlier
        for n in alive:  # they came back by themselves, without their token being reused
            n.wait_for(r"joined", after=marks[n.node_id])
        _, _, result = ask(restarted, "Thou shalt love thy neighbour", max_tokens=8)
        assert result.node_id in {n.node_id for n in alive}
        n = alive[0]
        n.signal(signal.SIGINT)
        assert n.proc.wait(30) == 0 and "draining" in n.output and "left the hub" in n.output
    finally:
        restarted.stop()


def test_a_hub_with_no_nodes_is_unavailable(tmp_path) -> None:
    hub = Hub(tmp_path / "hub")
    try:
        with pytest.raises(grpc.RpcError) as failed:
            list(hub.swarm().Ask(pb.AskRequest(prompt="hello"), timeout=30, metadata=hub.metadata))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no node is connected" in failed.value.details()
        done = cli("slm-hub", "ask", "hello", "--hub", hub.address, "--home", str(hub.home))
        assert done.returncode == 1 and "UNAVAILABLE: no node is connected" in done.stderr
    finally:
        assert hub.stop() == 0


def test_insecure_is_refused_off_loopback(tmp_path) -> None:
    done = cli("slm-hub", "serve", "--home", str(tmp_path), "--insecure", "--host", "0.0.0.0")
    assert done.returncode == 1 and "--insecure serves plaintext" in done.stderr
    assert not (tmp_path / "hub.db").exists()  # refused before anything was written


def test_join_without_a_ca_is_one_clear_line(tmp_path) -> None:
    done = cli("slm-node", "join", "--hub", "127.0.0.1:1", "--home", str(tmp_path))
    assert done.returncode == 1 and "--ca" in done.stderr
    done = cli("slm-node", "join", "--hub", "nohost", "--insecure", "--home", str(tmp_path))
    assert done.returncode == 1 and "HOST:PORT" in done.stderr


def test_the_hub_process_never_imports_torch() -> None:
    """The hub routes but runs no model; torch would add ~300 MB to every hub."""
    probe = "import sys, hub.serve, hub.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
