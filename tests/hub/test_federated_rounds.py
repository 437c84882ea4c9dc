"""Federated rounds with real processes: `slm-hub train` against a real hub (SuperLink), real
`slm-node join` nodes (SuperNodes, ClientApps) and the hub's SQLite ledger.

Two law nodes start from copies of one slm-tiny law model, each with its own half of the law
corpus; a third law node is misconfigured (its updates are not finite) and a medicine node sits
beside them. The tests share the network and run in file order: a FedAvg round, in which the
misconfigured node is rejected, then a round in which a node is killed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import psutil
import pytest
import torch
from safetensors.numpy import load_file
from sqlalchemy import select

from harness import BIN, ENV, Hub, Node, ask, cli, wait_trainable
from harness.processes import stop_all
from hub.storage.engine import make_engine, sqlite_url
from hub.storage.schema import TrainingRound
from protos import swarm_pb2 as pb
from slm.federated import local_train, weights_of
from slm.model_folder import WEIGHTS, load_model_folder
from tests.conftest import held_out_split

pytestmark = pytest.mark.slow  # real hub, node and Flower processes, and training

LOCAL_STEPS = 1  # one step: the misconfigured node sends its NaN weights before its loss shows it


def train_cli(hub: Hub, *args: str) -> subprocess.CompletedProcess:
    return cli("slm-hub", "train", "--home", str(hub.home), "--domain", "law", *args)


def rounds(hub: Hub) -> list[TrainingRound]:
    engine = make_engine(sqlite_url(hub.home / "hub.db"))
    with engine.connect() as conn:
        rows = list(conn.execute(select(TrainingRound).order_by(TrainingRound.created_at)))
    engine.dispose()
    return rows


def wait_version(hub: Hub, node_id: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while hub.nodes()[node_id].model_version != version:
        assert time.monotonic() < deadline, f"{node_id} serves {hub.nodes()[node_id].model_version}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("federation")
    seen, _ = held_out_split("law")
    cut = seen.rfind("\n", 0, len(seen) // 2)
    halves = {"a": seen[:cut], "b": seen[cut + 1 :]}
    base = trained["law"].folder
    hub = Hub(root / "hub")
    nodes = {}
    for name, text in halves.items():
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
        shutil.copytree(base, root / f"model-{name}")
        nodes[name] = Node(root / f"node-{name}", root / f"model-{name}", hub, hub.token("law"),
                           "--data", str(root / f"{name}.txt"))  # fmt: skip
    # A misconfigured node: an infinite learning rate turns its weights to NaN/Inf in one step.
    poisoned = root / "model-poisoned"
    shutil.copytree(base, poisoned)
    meta = json.loads((poisoned / "config.json").read_text())
    meta["training"]["train_config"]["learning_rate"] = float("inf")
    (poisoned / "config.json").write_text(json.dumps(meta))
    nodes["poisoned"] = Node(root / "node-poisoned", poisoned, hub, hub.token("law"),
                             "--data", str(root / "a.txt"))  # fmt: skip
    nodes["medicine"] = Node(root / "node-medicine", trained["medicine"].folder, hub,
                             hub.token("medicine"))  # fmt: skip
    hub.wait_connected([n.node_id for n in nodes.values()])
    wait_trainable(hub, "law", 3)
    yield hub, nodes, root
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


@pytest.fixture(scope="module")
def fedavg_round(network, trained):  # type: ignore[no-untyped-def]
    """One FedAvg round of the three law nodes: the medicine model's bytes and the law nodes'
    common start before it, `slm-hub train`'s result, and the round's ledger row. The
    misconfigured node leaves after it, so the answers and the next round are the others'."""
    hub, nodes, root = network
    medicine_weights = (trained["medicine"].folder / WEIGHTS).read_bytes()
    start = weights_of(load_model_folder(root / "model-a").model)
    done = train_cli(hub, "--rounds", "1", "--local-steps", str(LOCAL_STEPS), "--timeout", "120",
                     "--strategy", "fedavg", "--allow-small-fedavg")  # fmt: skip
    (row,) = rounds(hub)
    nodes["poisoned"].stop()
    return medicine_weights, start, done, row


def test_check_says_which_nodes_can_train(network) -> None:  # type: ignore[no-untyped-def]
    hub, nodes, _ = network
    ready = train_cli(hub, "--check", "--json")
    assert ready.returncode == 0, ready.stderr
    report = json.loads(ready.stdout)
    law = [nodes[n].node_id for n in ("a", "b", "poisoned")]
    assert sorted(report["ready"]) == sorted(law)
    short = train_cli(hub, "--check", "--min-nodes", "4")
    assert short.returncode == 1 and short.stdout.startswith("3 law node(s) ready to train")
    assert "fewer than --min-nodes 4" in short.stderr
    nobody = cli("slm-hub", "train", "--check", "--home", str(hub.home), "--domain", "politics",
                 "--min-nodes", "1")  # fmt: skip
    assert nobody.returncode == 1 and "0 politics node(s) ready to train" in nobody.stdout
    assert rounds(hub) == []  # a check trains nothing


def test_too_few_nodes_is_refused_before_any_run(network) -> None:  # type: ignore[no-untyped-def]
    hub, _, _ = network
    refused = train_cli(hub, "--min-nodes", "4")
    assert refused.returncode == 1
    assert "3 law node(s) connected for training, fewer than --min-nodes 4" in refused.stderr
    assert "Traceback" not in refused.stderr
    nobody = train_cli(hub, "--domain", "politics", "--min-nodes", "1")
    assert nobody.returncode == 1 and "0 politics node(s) connected" in nobody.stderr
    assert rounds(hub) == []


def test_small_fedavg_needs_to_be_allowed(network) -> None:  # type: ignore[no-untyped-def]
    hub, _, _ = network
    refused = train_cli(hub, "--strategy", "fedavg")
    assert refused.returncode == 1 and "lets one node choose the global step" in refused.stderr
    assert rounds(hub) == []


def test_a_fedavg_round_averages_the_two_law_updates_by_examples(  # type: ignore[no-untyped-def]
    network, trained, fedavg_round
) -> None:  # fmt: skip
    hub, nodes, root = network
    medicine_weights, start, done, row = fedavg_round
    assert done.returncode == 0, done.stderr
    assert "round 1: 2 participant(s), 1 rejected" in done.stderr

    participants = {p["node"]: p["examples"] for p in json.loads(row.participants)}
    assert set(participants) == {nodes["a"].node_id, nodes["b"].node_id}  # not medicine
    assert row.domain == "law" and row.round == 1

    # Each node's update, recomputed here from the same start, data, seed and threads (the
    # nodes run with --threads 1; float sums depend on how work is split across threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        updates = {
            name: local_train(trained["law"].folder, root / f"{name}.txt", start, LOCAL_STEPS, 1)
            for name in ("a", "b")
        }
    finally:
        torch.set_num_threads(threads)
    for name, update in updates.items():
        assert participants[nodes[name].node_id] == update.num_examples
    stored = load_file(hub.home / "models" / "law" / f"{row.weights_sha256}.safetensors")
    total = sum(u.num_examples for u in updates.values())
    assert set(stored) == set(start)
    # each change from the start is clipped to the cohort's lower median norm, then weighed
    deltas = {n: {k: u.weights[k].astype(np.float64) - start[k] for k in start}
              for n, u in updates.items()}  # fmt: skip
    norms = {n: np.sqrt(sum(np.sum(v**2) for v in d.values())) for n, d in deltas.items()}
    bound = min(norms.values())  # the lower median of two
    for key, tensor in stored.items():
        expected = start[key] + sum(
            deltas[n][key] * min(1.0, bound / norms[n]) * (u.num_examples / total)
            for n, u in updates.items()
        )
        np.testing.assert_allclose(tensor, expected, rtol=1e-4, atol=1e-5, err_msg=key)

    # Each law node earned half the round's reward (10 credits, split equally).
    for name in ("a", "b"):
        reply = hub.swarm().Balance(
            pb.BalanceRequest(node_id=nodes[name].node_id), metadata=hub.metadata
        )
        assert reply.micro_credits == 5_000_000
    assert hub.balance(nodes["poisoned"].node_id) == 0
    verified = cli("slm-hub", "ledger", "verify", "--home", str(hub.home))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Both law nodes serve the new global model; the medicine node is untouched.
    version = row.weights_sha256[:16]
    for name in ("a", "b"):
        wait_version(hub, nodes[name].node_id, version)
        nodes[name].wait_for(rf"adopted model {version}")
        assert load_model_folder(root / f"model-{name}").version == version
    assert (trained["medicine"].folder / WEIGHTS).read_bytes() == medicine_weights
    assert hub.nodes()[nodes["medicine"].node_id].model_version != version
    _, _, result = ask(hub, "The licensee shall indemnify the licensor against", max_tokens=8)
    assert result.node_id in (nodes["a"].node_id, nodes["b"].node_id)
    shown = cli("slm-hub", "ledger", "show", result.request_id, "--json", "--home", str(hub.home))
    assert '"success"' in shown.stdout, shown.stdout + shown.stderr  # the new model's signature


def test_a_node_sending_non_finite_weights_is_rejected_and_the_round_completes(  # type: ignore[no-untyped-def]
    network, fedavg_round
) -> None:  # fmt: skip
    hub, nodes, _ = network
    _, _, done, row = fedavg_round
    assert done.returncode == 0, done.stderr
    assert f"rejected {nodes['poisoned'].node_id[:12]}:" in done.stderr
    (rejected,) = json.loads(row.rejected)
    assert rejected["node"] == nodes["poisoned"].node_id
    assert "NaN or Inf" in rejected["reason"]
    assert nodes["poisoned"].node_id not in {p["node"] for p in json.loads(row.participants)}
    assert all(np.all(np.isfinite(v)) for v in load_file(
        hub.home / "models" / "law" / f"{row.weights_sha256}.safetensors").values())  # fmt: skip


def test_a_node_killed_during_a_round_does_not_hang_it(network) -> None:  # type: ignore[no-untyped-def]
    hub, nodes, _ = network
    before = len(rounds(hub))
    run = subprocess.Popen(
        [str(BIN / "slm-hub"), "train", "--home", str(hub.home), "--domain", "law", "--json",
         "--local-steps", "150", "--min-nodes", "2", "--timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert run.stdout is not None
    for line in run.stdout:
        if json.loads(line)["event"] == "round-started":
            break
    second = train_cli(hub, "--min-nodes", "1")
    assert second.returncode == 1 and "is already training law" in second.stderr
    victim = psutil.Process(nodes["b"].proc.pid)
    for process in [*victim.children(recursive=True), victim]:
        process.kill()  # the node, its SuperNode and its ClientApp, mid-round
    started = time.monotonic()
    _, err = run.communicate(timeout=180)
    assert run.returncode == 1
    assert time.monotonic() - started < 120
    assert "round 1:" in err and "fewer than --min-nodes 2" in err
    assert nodes["b"].node_id[:12] in err  # named among the rejected
    assert "Traceback" not in err
    assert len(rounds(hub)) == before  # a failed round records nothing, credits nobody
