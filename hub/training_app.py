"""The ServerApp of the training plane: Flower's transport under hub/federation.py's rounds.

Flower's SuperExec starts it (`flwr-serverapp`) for each run that `slm-hub train` submits; the
run config carries the plan (domain, members, rounds, where the hub's home and database are).
It writes what a round produced straight into the hub's home and ledger, as the hub would.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
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
from hub.superlink import DB_ENV, HOME_ENV

log = logging.getLogger("slm-hub.training")
app = ServerApp()

TTL_MARGIN_S = 30.0  # a message outlives its round's deadline by this much, then Flower drops it
NUMPY_STYPE = "numpy.ndarray"
NODE_METRICS = ("train_loss", "val_loss", "setup_s", "train_s", "received_at", "replied_at")


def to_record(weights: Weights) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


def from_record(record: ArrayRecord) -> Weights:
    """Arrays as numpy, refusing anything else a node could put there (an .npz, a pickle)."""
    out = {}
    for name, array in record.items():
        if array.stype != NUMPY_STYPE:
            raise ValueError(f"{name} is serialised as {array.stype!r}, not {NUMPY_STYPE!r}")
        value = array.numpy()
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{name} is a {type(value).__name__}, not an array")
        out[name] = value
    return out


def _reply(message: Message) -> Reply:
    """What a node sent, checked for form; anything malformed is that node's error, not ours."""
    if message.has_error():
        return Reply(error=message.error.reason or f"node error {message.error.code}")
    try:
        content = message.content
        weights = from_record(content["weights"]) if "weights" in content.array_records else None
        metrics = dict(content["metrics"]) if "metrics" in content.metric_records else {}
        examples = metrics.pop("num-examples", 0)
        if not isinstance(examples, int | float) or not np.isfinite(examples) or examples < 0:
            raise ValueError(f"num-examples is {examples!r}")
        kept = {k: float(metrics[k]) for k in NODE_METRICS
                if isinstance(metrics.get(k), int | float) and np.isfinite(metrics[k])}  # fmt: skip
    except Exception as exc:  # a node controls these bytes: refuse them, never crash the run
        return Reply(error=f"malformed reply ({type(exc).__name__}: {exc})")
    return Reply(weights, int(examples), kept)


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
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        # Keyed by the message answered: Flower's own error replies (node gone, message
        # expired) come from the SuperLink, not from the node they are about.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        return {
            sent_to[r.metadata.reply_to_message_id]: _reply(r)
            for r in replies
            if r.metadata.reply_to_message_id in sent_to
        }

    def fetch(self, nodes: Sequence[int], timeout: float) -> dict[int, Reply]:
        return self._send(MessageType.QUERY, nodes, None, {}, timeout)

    def train(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]:
        return self._send(MessageType.TRAIN, nodes, weights, config, timeout)

    def adopt(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]:
        return self._send(MessageType.EVALUATE, nodes, weights, config, timeout)


@contextlib.contextmanager
def domain_lock(home: Path, domain: str) -> Iterator[None]:
    """One run per domain at a time, enforced where runs execute (`slm-hub train` also checks,
    but two started at once could both pass): two would write the same nodes' folders."""
    path = home / "training" / f"{domain}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(
                f"another run is training {domain}; this one does nothing"
            ) from None
        yield


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan = TrainingPlan.from_run_config(dict(context.run_config))
    home = Path(os.environ[HOME_ENV])
    events = Events(events_path(home, context.run_id))
    try:
        cfg = HubConfig.load(home, os.environ.get(DB_ENV) or None)
        engine = make_engine(cfg.db_url)
        check_current(engine)
        ledger = Ledger(engine, load_signing_key(cfg.signing_key_path),
                        load_public_key(cfg.public_key_path), cfg.rewards)  # fmt: skip
        with domain_lock(home, plan.domain):
            run_rounds(plan, context.run_id, FlowerCohort(grid), ledger, GlobalStore(home),
                       events, log=log.warning)  # fmt: skip
    except Exception as exc:
        reason = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
        events.emit("failed", reason=reason)
        raise
