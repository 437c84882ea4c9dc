"""FlowerCohort over a stand-in Grid (a unit test of one module; the rounds over Flower's own
Grid are tests/hub/test_federated_rounds.py): replies are pulled until all are in or the
deadline passes, at the cohort's interval rather than Flower's 3 s."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from hub.training import flower
from protos import flower_keys as keys
from protos.flower_weights import to_record


class SlowGrid:
    """Answers message i (in push order) at pull number `answer_at[i]`; None: never."""

    def __init__(self, answer_at: list[int | None]) -> None:
        self.answer_at = answer_at
        self.pulls = 0
        self.pushed: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        self.pushed = list(messages)
        for m in self.pushed:
            m.metadata.__dict__["_message_id"] = m.object_id  # as Flower's Grid does
        return [m.metadata.message_id for m in self.pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        wanted = set(message_ids)
        return [
            Message(
                RecordDict(
                    {
                        keys.WEIGHTS: to_record({"w": np.full(2, i, np.float32)}),
                        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10 + i}),
                    }
                ),
                reply_to=m,
            )
            for i, m in enumerate(self.pushed)
            if m.metadata.message_id in wanted and self.answer_at[i] == self.pulls
        ]


WEIGHTS = {"w": np.zeros(2, np.float32)}


@pytest.fixture(autouse=True)
def in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds a Message only inside a run (the ServerApp's, in the hub)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def test_replies_arriving_over_several_pulls_are_all_kept_without_a_3_s_wait(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    monkeypatch.setattr(flower.time, "sleep", slept.append)
    grid = SlowGrid([1, 3, 2])
    replies = flower.FlowerCohort(grid).train([7, 8, 9], WEIGHTS, {}, timeout=30)  # type: ignore[arg-type]
    assert grid.pulls == 3 and slept == [flower.PULL_INTERVAL_S] * 2
    assert flower.PULL_INTERVAL_S <= 0.5  # Flower's own send_and_receive waits 3 s
    assert {n: r.num_examples for n, r in replies.items()} == {7: 10, 8: 11, 9: 12}
    assert float(replies[9].weights["w"][0]) == 2.0


def test_a_node_that_never_answers_is_missing_once_the_deadline_passes() -> None:
    grid = SlowGrid([1, None])
    timeout = 4 * flower.PULL_INTERVAL_S
    began = time.monotonic()
    replies = flower.FlowerCohort(grid).train([7, 8], WEIGHTS, {}, timeout=timeout)  # type: ignore[arg-type]
    assert timeout <= time.monotonic() - began < timeout + 10
    assert set(replies) == {7}
