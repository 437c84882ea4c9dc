"""`slm-hub train`'s choice of a domain's members (hub/training/runs.py), without processes: the
registry on SQLite, the SuperLink's answers faked. A round averages one kind of weights, so the
members must share the base their models adapt (or all be whole models)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.common.serde import user_config_from_proto
from sqlalchemy import Engine

from hub.storage.engine import make_engine, sqlite_url, upgrade
from hub.storage.registry import NodeRegistry
from hub.training import runs
from hub.training.plan import TrainingError, TrainingPlan
from protos import flower_keys as keys

SMOL = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OTHER = "7c1d0e" + "0" * 58
A, B, C, D = ("3f9a2c" + "a" * 26, "5e8b1d" + "b" * 26, "88aa01" + "c" * 26, "9d0f42" + "d" * 26)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(sqlite_url(tmp_path / "hub.db"))
    upgrade(engine)
    return engine


def join(engine: Engine, node: str, flower_id: int, base: str, domain: str = "law",
         preset: str = "custom") -> None:  # fmt: skip
    registry = NodeRegistry(engine)
    registry.admit(node, "ssh-key", domain, preset, "127.0.0.1", "v1", 1, base=base)
    registry.set_flower_node_id(node, flower_id)


ONLINE = {1: "online", 2: "online", 3: "online", 4: "offline"}


def test_nodes_that_share_a_base_train_together_and_the_plan_names_it(engine) -> None:  # type: ignore[no-untyped-def]
    join(engine, A, 1, SMOL)
    join(engine, B, 2, SMOL)
    join(engine, C, 4, OTHER)  # offline: not in the round, so not in the way
    join(engine, D, 3, "", domain="medicine", preset="slm-tiny")  # another domain
    ready = runs.cohort(engine, "law", ONLINE)
    assert ready.ready == {1: A, 2: B} and ready.mixed_bases() is None
    assert ready.base == SMOL and ready.bases() == {SMOL: [A, B]}
    medicine = runs.cohort(engine, "medicine", ONLINE)
    assert medicine.mixed_bases() is None and medicine.base == ""  # whole models share ""


def test_an_adapter_beside_a_whole_model_is_refused_naming_every_node(engine) -> None:  # type: ignore[no-untyped-def]
    join(engine, A, 1, SMOL)
    join(engine, B, 2, SMOL)
    join(engine, C, 3, "", preset="slm-tiny")
    refusal = runs.cohort(engine, "law", ONLINE).mixed_bases()
    # A majority does not outvote the odd one out: the operator decides which base trains.
    assert refusal == (
        f"law nodes do not share a base: {A[:12]} and {B[:12]} adapt base {SMOL[:12]}…, "
        f"{C[:12]} is a whole model (slm-tiny); a round averages one kind of weights: train "
        "them on one base, or take those of other bases out of the round (stop their "
        "`slm-node join`, or `slm-hub node revoke` them)"
    )


def test_adapters_of_two_bases_are_refused(engine) -> None:  # type: ignore[no-untyped-def]
    join(engine, A, 1, SMOL)
    join(engine, B, 2, OTHER)
    ready = runs.cohort(engine, "law", ONLINE)
    assert ready.base == ""
    assert (
        ready.mixed_bases()
        == (  # the largest group first; a tie by base
            f"law nodes do not share a base: {B[:12]} adapts base {OTHER[:12]}…, {A[:12]} adapts "
            f"base {SMOL[:12]}…; a round averages one kind of weights: train them on one base, or "
            "take those of other bases out of the round (stop their `slm-node join`, or "
            "`slm-hub node revoke` them)"
        )
    )


class FakeControl:
    """The SuperLink's Control API as `start` uses it: no runs going, StartRun recorded."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.closed = False

    def ListRuns(self, request: Any) -> Any:  # Flower's names
        return SimpleNamespace(run_dict={})

    def StartRun(self, request: Any) -> Any:
        self.started.append(request)
        return SimpleNamespace(run_id=7)

    def close(self) -> None:
        self.closed = True


def start(monkeypatch, engine: Engine, tmp_path: Path) -> tuple[FakeControl, Any]:  # type: ignore[no-untyped-def]
    control = FakeControl()
    monkeypatch.setattr(runs, "_connect", lambda home: (control, ONLINE))
    return control, lambda: runs.start(tmp_path, lambda: engine, TrainingPlan(domain="law"))


def test_train_refuses_mixed_bases_before_submitting_a_run(monkeypatch, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    join(engine, A, 1, SMOL)
    join(engine, B, 2, SMOL)
    join(engine, C, 3, "", preset="slm-tiny")
    control, run = start(monkeypatch, engine, tmp_path)
    with pytest.raises(TrainingError, match=rf"^law nodes do not share a base: {A[:12]} and"):
        run()
    assert control.started == [] and control.closed


def test_the_submitted_plan_carries_the_members_shared_base(monkeypatch, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    join(engine, A, 1, SMOL)
    join(engine, B, 2, SMOL)
    control, run = start(monkeypatch, engine, tmp_path)
    _, run_id, plan = run()
    assert run_id == 7 and plan.base == SMOL and plan.members == {1: A, 2: B}
    (request,) = control.started
    sent = TrainingPlan.from_run_config(user_config_from_proto(request.override_config))
    assert sent == plan
    assert getattr(sent, keys.PLAN_BASE) == SMOL  # the field the ClientApp reads


def test_a_plans_base_is_a_sha256_or_empty() -> None:
    assert TrainingPlan(base=SMOL).base == SMOL and TrainingPlan().base == ""
    with pytest.raises(TrainingError, match="a plan's base is a sha256"):
        TrainingPlan(base="smollm2")
