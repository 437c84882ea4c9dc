"""The round loop's rules (hub/training/rounds.py) over a fake transport and the real ledger (SQLite
and PostgreSQL): who takes part, what is rejected, what a round needs, what is stored and paid.
The same loop over Flower's real transport is tested in test_federated_rounds.py."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from hub.ledger.entries import node_account
from hub.ledger.ledger import Ledger
from hub.storage.schema import TrainingRound
from hub.training.plan import TrainingError, TrainingPlan
from hub.training.rounds import Reply, run_rounds
from hub.training.run_files import Events, read_events
from hub.training.store import GlobalStore
from protos import training_app
from tests.hub.ledger_load import NODES

START = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}


class FakeCohort:
    """Nodes that add `delta` to what they get; `silent` ones never answer."""

    def __init__(self, deltas: dict[int, float], examples: dict[int, int], silent=()) -> None:  # type: ignore[no-untyped-def]
        self.deltas, self.examples, self.silent = deltas, examples, set(silent)
        self.held: dict[int, dict] | None = None  # what fetch returns, per node (default START)
        self.trained: list[list[int]] = []
        self.adopted: list[list[int]] = []

    def online(self) -> set[int]:
        return set(self.deltas)

    def fetch(self, nodes: Sequence[int], timeout: float) -> dict[int, Reply]:
        held = self.held or {}
        return {n: Reply(held.get(n, {k: v.copy() for k, v in START.items()})) for n in nodes}

    def train(self, nodes: Sequence[int], weights, config: dict[str, Any], timeout: float):  # type: ignore[no-untyped-def]
        self.trained.append(list(nodes))
        return {
            n: Reply({k: v + self.deltas[n] for k, v in weights.items()}, self.examples[n],
                     {"train_loss": 2.0 + n, "val_loss": 2.5})
            for n in nodes if n not in self.silent
        }  # fmt: skip

    def adopt(self, nodes: Sequence[int], weights, config: dict[str, Any], timeout: float):  # type: ignore[no-untyped-def]
        self.adopted.append(list(nodes))
        # node 2 holds no data to validate on: it adopts and reports no loss
        return {n: Reply(metrics={"val_loss": 1.5} if n != 2 else {}) for n in nodes}


def plan(tmp_path: Path, **overrides: Any) -> TrainingPlan:
    members = ",".join(f"{i + 1}={node}" for i, node in enumerate(NODES[:3]))
    values = {"domain": "law", "node_ids": members, "local_steps": 3, "min_nodes": 2,
              "round_timeout": 5.0, **overrides}  # fmt: skip
    return TrainingPlan(**values)


def run(tmp_path: Path, ledger: Ledger, cohort: FakeCohort, **overrides: Any) -> list[dict]:
    run_id = 7 + len(list(tmp_path.glob("events-*")))  # Flower gives every run its own id
    events = Events(tmp_path / f"events-{run_id}.jsonl")
    store = GlobalStore(tmp_path)
    run_rounds(plan(tmp_path, **overrides), run_id, cohort, ledger, store, events,
               log=lambda _: None)  # fmt: skip
    return read_events(events.path)[0]


def balance(ledger: Ledger, i: int) -> int:
    return ledger.balances()[node_account(NODES[i])]


def rows(ledger: Ledger) -> list[TrainingRound]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(TrainingRound).order_by(TrainingRound.round)))


def test_rounds_store_record_and_credit_the_fedavg_of_the_updates(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    cohort = FakeCohort({1: 1.0, 2: 3.0, 3: 0.0}, {1: 30, 2: 10, 3: 0}, silent=[3])
    events = run(tmp_path, ledger, cohort, rounds=2, strategy="fedavg", small_fedavg=True)
    first, second = rows(ledger)
    assert [p["node"] for p in json.loads(first.participants)] == [NODES[0], NODES[1]]
    assert json.loads(first.rejected) == [{"node": NODES[2], "reason": "no update within 5 s"}]
    # Round 1 starts from the fetched model. The changes are clipped to the lower median norm
    # (of two: the smaller, so the 3 becomes a 1), then FedAvg moves the model by 1.
    store = GlobalStore(tmp_path)
    np.testing.assert_allclose(store.load("law", first.weights_sha256)["w"], START["w"] + 1.0)
    np.testing.assert_allclose(store.load("law", second.weights_sha256)["w"], START["w"] + 2.0)
    assert ledger.latest_weights("law") == second.weights_sha256
    assert json.loads(first.metrics)["val_loss"] == 2.5  # the nodes' own, after local training
    assert events[3]["global_val_loss"] == 1.5  # the global model's, on the nodes' data
    assert events[3]["adopted"] == sorted([NODES[0], NODES[1]])
    assert cohort.adopted == [[1, 2], [1, 2]]  # only participants adopt
    assert balance(ledger, 0) == balance(ledger, 1) == 2 * 5_000_000
    assert [e["event"] for e in events] == [
        "started", "initial", "round-started", "round-done", "round-started", "round-done", "done",
    ]  # fmt: skip


def test_a_first_run_starts_from_the_median_of_the_agreeing_node_models(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    members = ",".join(f"{i + 1}={node}" for i, node in enumerate(NODES))
    cohort = FakeCohort({1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}, {1: 1, 2: 1, 3: 1, 4: 1}, silent=[4])
    cohort.held = {
        1: {k: v + 100 for k, v in START.items()},  # one node tries to choose the start
        2: {k: v.copy() for k, v in START.items()},
        3: {k: v + 2 for k, v in START.items()},
        4: {"w": START["w"].astype(np.float16), "b": START["b"]},  # disagrees on dtype: ignored
    }
    events = run(tmp_path, ledger, cohort, node_ids=members)
    assert events[1]["source"] == "the median of 3 node model(s)"
    (row,) = rows(ledger)
    got = GlobalStore(tmp_path).load("law", row.weights_sha256)
    np.testing.assert_allclose(got["w"], START["w"] + 2 + 1.0)  # the median, then a round


def test_two_nodes_holding_different_models_cannot_start_a_domain(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    cohort = FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1})
    cohort.held = {1: {k: v + 100 for k, v in START.items()}, 2: dict(START)}
    with pytest.raises(TrainingError, match="different models and 2 are too few for a median"):
        run(tmp_path, ledger, cohort)
    assert rows(ledger) == []


def test_a_new_run_starts_from_the_domains_latest_global_model(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    run(tmp_path, ledger, FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1}))
    events = run(tmp_path, ledger, FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1}))
    assert events[1]["source"].startswith("global ")
    store = GlobalStore(tmp_path)
    latest = store.load("law", ledger.latest_weights("law"))
    np.testing.assert_allclose(latest["w"], START["w"] + 2.0)


def test_a_domain_moving_onto_a_base_and_back_starts_each_kind_from_its_own_model(
    tmp_path, ledger
) -> None:  # type: ignore[no-untyped-def]
    """Whole-model rounds, then the nodes become adapters of a base: the adapter run starts
    from the nodes' adapters (never the stored whole model, which no adapter node could apply),
    and a later whole-model run starts from the last whole model, not the adapters."""
    run(tmp_path, ledger, FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1}))
    whole = ledger.latest_weights("law", "")
    adapter = {"blocks.0.mlp.fc.lora_a": np.ones((2, 4), np.float32),
               "blocks.0.mlp.fc.lora_b": np.zeros((4, 2), np.float32)}  # fmt: skip
    cohort = FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1})
    cohort.held = {1: adapter, 2: adapter}
    base = "ab" * 32
    events = run(tmp_path, ledger, cohort, base=base)
    assert events[1]["source"] == "the median of 2 node model(s)"
    adapted = ledger.latest_weights("law", base)
    assert adapted != whole and ledger.latest_weights("law") == adapted
    assert set(GlobalStore(tmp_path).load("law", adapted)) == set(adapter)
    events = run(tmp_path, ledger, FakeCohort({1: 1.0, 2: 1.0}, {1: 1, 2: 1}))
    assert events[1]["source"] == f"global {whole[:16]}"
    assert ledger.latest_weights("law", "cd" * 32) is None


def test_rewards_can_follow_examples(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    run(tmp_path, ledger, FakeCohort({1: 1.0, 2: 1.0}, {1: 3, 2: 1}), reward="by-examples")
    assert balance(ledger, 0) == 7_500_000 and balance(ledger, 1) == 2_500_000


def test_a_round_with_too_few_usable_updates_fails_and_records_nothing(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    cohort = FakeCohort({1: 1.0, 2: 1.0, 3: 1.0}, {1: 1, 2: 1, 3: 1}, silent=[2, 3])
    with pytest.raises(TrainingError, match=r"1 usable update\(s\), fewer than --min-nodes 2"):
        run(tmp_path, ledger, cohort)
    assert rows(ledger) == [] and balance(ledger, 0) == 0
    assert not list((tmp_path / "models").glob("law/*"))


def test_too_few_online_members_fails_before_training(tmp_path, ledger) -> None:  # type: ignore[no-untyped-def]
    cohort = FakeCohort({1: 1.0}, {1: 1})
    with pytest.raises(TrainingError, match="1 of the 3 law nodes are connected"):
        run(tmp_path, ledger, cohort)
    assert cohort.trained == []


def test_the_plan_travels_as_run_config_and_checks_its_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = plan(tmp_path, rounds=3, strategy="krum")
    assert TrainingPlan.from_run_config(p.run_config()) == p
    assert p.members == {1: NODES[0], 2: NODES[1], 3: NODES[2]}
    with pytest.raises(TrainingError, match="unknown strategy 'fedsgd'"):
        TrainingPlan(strategy="fedsgd")
    with pytest.raises(TrainingError, match="--rounds must be at least 1"):
        TrainingPlan(rounds=0)
    with pytest.raises(TrainingError, match="--timeout must be positive"):
        TrainingPlan(round_timeout=0)
    with pytest.raises(TrainingError, match="unknown reward split 'by-luck'"):
        TrainingPlan(reward="by-luck")
    assert TrainingPlan().strategy == "trimmed-mean"
    with pytest.raises(TrainingError, match="fedavg with --min-nodes 2 lets one node choose"):
        TrainingPlan(strategy="fedavg", min_nodes=2)
    TrainingPlan(strategy="fedavg", min_nodes=3)
    TrainingPlan(strategy="fedavg", min_nodes=2, small_fedavg=True)  # asked for explicitly


def test_the_app_bundle_is_one_static_pyproject_that_flower_accepts() -> None:
    import io
    import zipfile

    from flwr.common.config import get_fab_config

    fab = training_app.bundle()
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert [n for n in names if not n.startswith(".info/")] == ["pyproject.toml"]
    config = get_fab_config(fab)
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "hub.server_app:app", "clientapp": "node.training_app:app",
    }  # fmt: skip
    defaults = tomllib.loads(training_app.PYPROJECT)["tool"]["flwr"]["app"]["config"]
    assert set(defaults) == set(TrainingPlan().run_config()) == {training_app.PLAN}
    # the plan is not in the bundle, so its bytes (what a node pins) never change with it
    assert training_app.bundle.__wrapped__() == training_app.bundle()  # built afresh: the same
    with pytest.raises(TrainingError, match="holds no training plan"):
        TrainingPlan.from_run_config({"plan": "{}"})


def test_a_global_model_that_does_not_match_its_hash_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = GlobalStore(tmp_path)
    sha = store.save("law", START)
    store.path("law", sha).write_bytes(store.path("law", sha).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(TrainingError, match="does not match its hash"):
        store.load("law", sha)


def test_one_run_per_domain_is_enforced_where_runs_execute(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hub.training.run_files import domain_lock

    with domain_lock(tmp_path, "law"):
        with (
            pytest.raises(TrainingError, match="another run is training law"),
            domain_lock(tmp_path, "law"),
        ):
            pass
        with domain_lock(tmp_path, "medicine"):
            pass  # other domains train meanwhile
    with domain_lock(tmp_path, "law"):
        pass  # released with the run
