"""The ClientApp's reading of the run's plan (node/training_app.py): the base it checks its own
model against (slm.federated.check_round_base, tested in tests/slm/test_federated.py)."""

from __future__ import annotations

import json

import pytest
from flwr.app import Context, RecordDict

from hub.training.plan import TrainingPlan
from node.training_app import expected_base
from protos import training_app
from slm.errors import SLMError

SMOL = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def context(run_config: dict) -> Context:
    return Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config=run_config)


def test_the_clientapp_reads_the_base_the_hubs_plan_names() -> None:
    plan = TrainingPlan(domain="law", base=SMOL)
    assert expected_base(context(plan.run_config())) == SMOL
    assert expected_base(context(TrainingPlan(domain="law").run_config())) == ""  # whole models


NO_BASE = [{}, {training_app.PLAN: "not json"}, {training_app.PLAN: json.dumps({"rounds": 1})}]


@pytest.mark.parametrize("config", NO_BASE)
def test_a_run_whose_plan_names_no_base_is_refused(config: dict) -> None:
    with pytest.raises(SLMError, match="this run's config names no base"):
        expected_base(context(config))
