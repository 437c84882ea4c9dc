"""The ServerApp of the training plane: Flower's transport under hub/federation.py's rounds.

Flower's SuperExec starts it (`flwr-serverapp`) for each run that `slm-hub train` submits; the
run config carries the plan (domain, members, rounds, where the hub's home and database are).
It writes what a round produced straight into the hub's home and ledger, as the hub would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from hub.aggregation import Weights
from hub.db import check_current, make_engine
from hub.federation import (
    Events,
    GlobalStore,
    Reply,
    TrainingError,
    TrainingPlan,
    events_path,
    run_rounds,
)
from hub.home import HubConfig
from hub.keys import load_public_key, load_signing_key
from hub.ledger import Ledger

log = logging.getLogger("slm-hub.training")
app = ServerApp()

TTL_MARGIN_S = 30.0  # a message outlives its round's deadline by this much, then Flower drops it


def to_record(weights: Weights) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


def from_record(record: ArrayRecord) -> Weights:
    return {k: a.numpy() for k, a in record.items()}


def _reply(message: Message) -> Reply:
    if message.has_error():
        return Reply(error=message.error.reason or f"node error {message.error.code}")
    content = message.content
    weights = from_record(content["weights"]) if "weights" in content.array_records else None
    metrics = dict(content["metrics"]) if "metrics" in content.metric_records else {}
    examples = int(metrics.pop("num-examples", 0))
    return Reply(weights, examples, {k: float(v) for k, v in metrics.items()})


class FlowerCohort:
    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def online(self) -> set[int]:
        return set(self.grid.get_node_ids())

    def _send(
        self,
        kind: str,
        nodes: Sequence[int],
        weights: Weights | None,
        config: dict[str, Any],
        timeout: float,
    ) -> dict[int, Reply]:
        messages = []
        for node in nodes:
            content = RecordDict({"config": ConfigRecord(config)})
            if weights is not None:
                content["weights"] = to_record(weights)
            messages.append(
                Message(
                    content=content, dst_node_id=node, message_type=kind, ttl=timeout + TTL_MARGIN_S
                )
            )
        replies = self.grid.send_and_receive(messages, timeout=timeout)
        return {m.metadata.src_node_id: _reply(m) for m in replies}

    def fetch(self, node: int, timeout: float) -> Reply:
        return self._send(MessageType.QUERY, [node], None, {}, timeout).get(
            node, Reply(error=f"no reply within {timeout:g} s")
        )

    def train(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]:
        return self._send(MessageType.TRAIN, nodes, weights, config, timeout)

    def adopt(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]:
        return self._send(MessageType.EVALUATE, nodes, weights, config, timeout)


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan = TrainingPlan.from_run_config(dict(context.run_config))
    home = Path(plan.hub_home)
    events = Events(events_path(home, context.run_id))
    try:
        cfg = HubConfig.load(home, plan.db_url or None)
        engine = make_engine(cfg.db_url)
        check_current(engine)
        ledger = Ledger(
            engine,
            load_signing_key(cfg.signing_key_path),
            load_public_key(cfg.public_key_path),
            cfg.rewards,
        )
        run_rounds(
            plan,
            context.run_id,
            FlowerCohort(grid),
            ledger,
            GlobalStore(home),
            events,
            log=log.warning,
        )
    except Exception as exc:
        reason = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
        events.emit("failed", reason=reason)
        raise
