"""Who may ask, and who pays, tried as clients would: a real hub and two real nodes on
127.0.0.1, gRPC calls with and without keys, keys over their rate and credits, the stop-string
bomb, and (on SQLite and PostgreSQL) a thousand paid Asks from four keys and a retried one."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import defaultdict

import grpc
import pytest

from harness import Hub, Node, ask, cli
from harness.processes import stop_all
from protos import swarm_pb2 as pb
from tests.hub.conftest import fresh_postgres

pytestmark = pytest.mark.slow  # real hub and node processes

DOMAINS = ("medicine", "law")
ASKS, THREADS = 1000, 5  # per key: 5 client threads of 50 Asks
POSTGRES = os.environ.get("SWARM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _start(root, trained, db_url: str | None = None):  # type: ignore[no-untyped-def]
    home = root / "hub"
    if db_url is not None:  # every command of this home (tokens, keys, grants) uses it too
        cli("slm-hub", "init", "--home", str(home), "--db", db_url, check=True)
        toml = home / "hub.toml"
        toml.write_text(toml.read_text().replace("[hub]\n", f'[hub]\ndb_url = "{db_url}"\n'))
    hub = Hub(home)
    nodes = {d: Node(root / f"node-{d}", trained[d].folder, hub, hub.token(d)) for d in DOMAINS}
    hub.wait_connected([n.node_id for n in nodes.values()])
    return hub, nodes


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    hub, nodes = _start(tmp_path_factory.mktemp("public"), trained)
    yield hub, nodes
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def _code(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value


def _scores(nodes: dict[str, Node]) -> int:
    """Score requests the nodes have served: how many requests reached any node."""
    return sum(n.output.count("score ") for n in nodes.values())


def test_every_call_needs_a_valid_key(network, trained) -> None:
    hub, nodes = network
    swarm, before = hub.swarm(), _scores(nodes)
    request = pb.AskRequest(prompt="Acute otitis media", sampling=pb.SamplingParams(max_tokens=4))
    forged = "Bearer slmk_0123456789ab_" + "x" * 43
    wrong = ((), [("authorization", forged)], [("authorization", "Basic dXNlcg==")],
             [("authorization", "Bearer nope")])  # fmt: skip
    for metadata in wrong:
        error = _code(lambda m=metadata: list(swarm.Ask(request, timeout=30, metadata=m)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    for call in (lambda: swarm.ListNodes(pb.ListNodesRequest()),
                 lambda: swarm.Balance(pb.BalanceRequest())):  # fmt: skip
        assert _code(call).code() == grpc.StatusCode.UNAUTHENTICATED
    assert _scores(nodes) == before  # no node heard of any of them

    alice = hub.new_key("alice", credits="50")
    mine = [("authorization", f"Bearer {alice}")]
    _, _, result = ask(hub, trained["law"].held_out[:200], key=alice, max_tokens=4)
    assert result.charged_micro_credits > 0
    own = swarm.Balance(pb.BalanceRequest(), metadata=mine)
    assert own.micro_credits == 50_000_000 - result.charged_micro_credits
    assert own.account.startswith("key:")
    listed = swarm.ListNodes(pb.ListNodesRequest(), metadata=mine).nodes
    assert listed and all(n.reputation == 0 for n in listed)  # reputations: admin only
    assert all(n.reputation > 0 for n in hub.nodes().values())
    node_balance = pb.BalanceRequest(node_id=result.node_id)
    denied = _code(lambda: swarm.Balance(node_balance, metadata=mine))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    revoked = cli("slm-hub", "key", "revoke", "alice", "--home", str(hub.home))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.5)  # the hub's key cache lives a second
    error = _code(lambda: list(swarm.Ask(request, timeout=30, metadata=mine)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in error.details()


def test_the_cli_reads_its_key_from_a_file_or_the_environment(network, tmp_path) -> None:
    hub, _ = network
    key = hub.new_key("cli", credits="10")
    where = ("--hub", hub.address, "--ca", str(hub.ca), "--home", str(tmp_path))  # no api_key
    missing = cli("slm-hub", "ask", "Thou shalt", "--max-tokens", "3", *where)
    assert missing.returncode == 1 and "no API key" in missing.stderr
    (tmp_path / "k").write_text(key + "\n")
    by_file = cli("slm-hub", "ask", "Thou shalt", "--max-tokens", "3", "--key-file",
                  str(tmp_path / "k"), "--json", *where)  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    assert int(json.loads(by_file.stdout)["charged_micro_credits"]) > 0
    by_env = cli("slm-hub", "nodes", *where, env={"SLM_HUB_API_KEY": key})
    assert by_env.returncode == 0 and "2 connected" in by_env.stdout, by_env.stderr


def test_keys_over_their_rate_or_credits_are_refused_before_any_node_hears(network) -> None:
    hub, nodes = network
    slow = hub.new_key("slow", credits="100", rate=2)
    ask(hub, "The licensee shall", key=slow, max_tokens=2)
    ask(hub, "The licensee shall", key=slow, max_tokens=2)
    before = _scores(nodes)
    error = _code(lambda: ask(hub, "The licensee shall", key=slow, max_tokens=2))
    assert (
        error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 times a minute" in error.details()
    )
    poor = hub.new_key("poor", credits="1.15")  # 8 tokens may cost (1 + 0.08) x 1.1 = 1.188
    error = _code(lambda: ask(hub, "The licensee shall", key=poor, max_tokens=8))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "credits" in error.details()
    assert _scores(nodes) == before
    _, _, result = ask(hub, "The licensee shall", key=poor, max_tokens=1)  # this one it can pay
    assert 0 < result.charged_micro_credits <= 1_111_000


def test_the_stop_string_bomb_is_refused_and_every_node_stays(network) -> None:
    hub, nodes = network
    swarm, before = hub.swarm(), _scores(nodes)
    bombs = [["s" * 64] * 63_000, ["stop"] * 640_000, ["a", "b", "c", "d", "e"], ["x" * 65]]
    for stops in bombs:
        request = pb.AskRequest(prompt="The", sampling=pb.SamplingParams(stop=stops))
        error = _code(lambda r=request: list(swarm.Ask(r, timeout=60, metadata=hub.metadata)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert _scores(nodes) == before
    listed = hub.nodes()
    assert all(listed[n.node_id].connected for n in nodes.values())
    text, _, _ = ask(hub, "The licensee shall", max_tokens=3, stop=["zzz"])
    assert text


@pytest.fixture(scope="module")
def postgres_url():  # type: ignore[no-untyped-def]
    with fresh_postgres() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def paid(request, trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":  # the module's network: a hub on a SQLite file
        yield request.getfixturevalue("network")
        return
    root = tmp_path_factory.mktemp("paid-postgresql")
    hub, nodes = _start(root, trained, request.getfixturevalue("postgres_url"))
    yield hub, nodes
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def _entries(hub: Hub) -> list[dict]:
    out = cli("slm-hub", "ledger", "export", "--format", "json", "--home", str(hub.home))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_a_thousand_asks_from_four_keys_pay_their_nodes_exactly(paid, trained) -> None:
    hub, _ = paid
    keys = {f"payer{i}": hub.new_key(f"payer{i}", credits="10000") for i in range(4)}
    charged: dict[str, int] = defaultdict(int)
    failures: list[BaseException] = []
    prompts = [trained[d].held_out[i * 80 : i * 80 + 80] for d in DOMAINS for i in range(5)]
    lock = threading.Lock()

    def client(name: str, offset: int) -> None:
        try:
            for i in range(ASKS // len(keys) // THREADS):
                _, _, r = ask(hub, prompts[(offset + i) % len(prompts)], key=keys[name],
                              max_tokens=2)  # fmt: skip
                with lock:
                    charged[name] += r.charged_micro_credits
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n, j)) for n in keys for j in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    entries = _entries(hub)
    listing = json.loads(cli("slm-hub", "key", "list", "--json", "--home", str(hub.home),
                             check=True).stdout)  # fmt: skip
    accounts = {k["name"]: f"key:{k['key_id']}" for k in listing if k["name"] in keys}
    balance: dict[str, int] = defaultdict(int)
    for e in entries:
        balance[e["debit"]] -= e["amount"]
        balance[e["credit"]] += e["amount"]
    assert sum(balance.values()) == 0
    for name, account in accounts.items():
        spent = 10_000_000_000 - balance[account]
        to_nodes = sum(e["amount"] for e in entries
                       if e["debit"] == account and e["kind"] == "inference_reward")  # fmt: skip
        fees = sum(e["amount"] for e in entries if e["debit"] == account and e["kind"] == "hub_fee")
        assert spent == charged[name] == to_nodes + fees > 0
        assert fees == pytest.approx(to_nodes * 0.1, abs=len(entries))  # 10% per answer, floored
    paid_by_them = [
        e for e in entries if e["kind"] == "hub_fee" and e["debit"] in accounts.values()
    ]
    assert len(paid_by_them) == ASKS  # every answer was paid for, once
    verified = cli("slm-hub", "ledger", "verify", "--home", str(hub.home))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_retried_request_is_charged_once(paid) -> None:
    hub, _ = paid
    key = hub.new_key(f"retry{uuid.uuid4().hex[:6]}", credits="100")
    _, _, first = ask(hub, "Thou shalt not", key=key, idempotency_key="order-42", max_tokens=3)
    error = _code(lambda: ask(hub, "Thou shalt not", key=key, idempotency_key="order-42",
                              max_tokens=3))  # fmt: skip
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and first.request_id in error.details()
    own = hub.swarm().Balance(pb.BalanceRequest(), metadata=[("authorization", f"Bearer {key}")])
    assert own.micro_credits == 100_000_000 - first.charged_micro_credits
    _, _, other = ask(hub, "Thou shalt not", key=key, idempotency_key="order-43", max_tokens=3)
    assert other.request_id != first.request_id
