"""The pages' read models over a real ledger, on SQLite and on the real PostgreSQL server:
the bucketed series, the leaderboard, a node's history and the training runs are what the
ledger holds (the SQL is plain enough for both backends)."""

from __future__ import annotations

import pytest

from hub.api.views import ViewError, Views
from hub.ledger.rewards import InferenceRecord
from hub.storage.registry import NodeRegistry
from tests.hub.ledger_load import NODES, record_for


class _Live:
    def __init__(self, domain: str) -> None:
        self.domain, self.model_version, self.capacity, self.in_flight = domain, "v9", 3, 1
        self.last_heard = 0.0


@pytest.fixture
def views(ledger) -> Views:  # type: ignore[no-untyped-def]
    registry = NodeRegistry(ledger.engine)
    for i, node in enumerate(NODES):
        registry.admit(
            node, f"ssh-key {i}", "medicine" if i % 2 else "law", "slm-tiny", "", "v1", 2
        )
    ledger.record_inferences([record_for(n) for n in range(40)])
    ledger.record_round("88:1", "law", 1, [(NODES[0], 10), (NODES[2], 30)],
                        metrics={"train_loss": 4.5, "val_loss": 4.75, "run_id": 88},
                        weights_sha256="ab" * 32,
                        rejected=[{"node": NODES[1], "reason": "NaN in the update"}])  # fmt: skip
    ledger.record_round("88:2", "law", 2, [(NODES[0], 10)], metrics={"train_loss": "bad"})
    return Views(ledger.engine, ledger, {NODES[0]: _Live("law")}, {NODES[0]: {"honest": 2}})


def test_nodes_show_live_state_and_the_last_hour(views) -> None:  # type: ignore[no-untyped-def]
    shown = {n["node_id"]: n for n in views.nodes(admin=False)["nodes"]}
    live, idle = shown[NODES[0]], shown[NODES[1]]
    assert live["status"] == "connected" and live["model_version"] == "v9"
    assert (live["in_flight"], live["capacity"], live["audits_passed"]) == (1, 3, 2)
    assert idle["status"] == "offline" and idle["in_flight"] == 0 and idle["model_version"] == "v1"
    assert live["reputation"] is None  # the admin's to see
    assert views.nodes(admin=True)["nodes"][0]["reputation"] == 1.0
    chosen = sum(1 for n in range(40) if record_for(n).segments[-1][0] == NODES[0])
    assert live["asks_last_hour"] == chosen and live["latency_ms"] == 12.5


def test_traffic_and_rewards_add_up_to_the_ledger(views, ledger) -> None:  # type: ignore[no-untyped-def]
    series = views.traffic()["series"]
    assert sum(p["asks"] for p in series) == 40
    assert sum(p["tokens"] for p in series) == sum(
        sum(t for _, t in record_for(n).segments) for n in range(40)
    )
    rewards = views.rewards("day", "")
    paid = sum(p["credits"] for p in rewards["paid"])
    nodes = {
        b["account"]: b["credits"] for b in rewards["balances"] if b["account"].startswith("node:")
    }
    assert paid == pytest.approx(sum(nodes.values()))
    board = rewards["leaderboard"]
    assert [r["earned"] for r in board] == sorted((r["earned"] for r in board), reverse=True)
    assert {r["account"] for r in board} <= set(nodes)
    assert views.rewards("hour", "medicine")["leaderboard"]
    with pytest.raises(ViewError):
        views.rewards("year", "")
    assert views.chain()["length"] == len(ledger.history())


def test_a_nodes_history_is_its_own_entries(views, ledger) -> None:  # type: ignore[no-untyped-def]
    mine = views.node_history(NODES[0])
    assert mine["balance"] == pytest.approx(ledger.balance(f"node:{NODES[0]}") / 1e6)
    assert sum(e["credits"] for e in mine["entries"]) == pytest.approx(mine["balance"])
    with pytest.raises(ViewError) as missing:
        views.node_history("0" * 32)
    assert missing.value.status == 404


def test_training_groups_rounds_into_runs(views) -> None:  # type: ignore[no-untyped-def]
    (law,) = views.training()["domains"]
    (run,) = law["runs"]
    assert run["run_id"] == "88" and [r["round"] for r in run["rounds"]] == [1, 2]
    first, second = run["rounds"]
    assert first["train_loss"] == 4.5 and first["rejected"][0]["reason"] == "NaN in the update"
    assert second["train_loss"] is None  # a value that is not a number is shown as none


def test_an_unpaid_inference_is_counted_but_pays_nobody(views, ledger) -> None:  # type: ignore[no-untyped-def]
    before = views.rewards("all", "")["paid"]
    ledger.record_inferences([InferenceRecord("req-x", "0" * 64, "failed", [(NODES[3], 0)])])
    assert sum(p["asks"] for p in views.traffic()["series"]) == 41
    assert views.rewards("all", "")["paid"] == before
