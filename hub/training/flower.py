"""Flower's transport under the round loop: a `Cohort` over the ServerApp's Grid.

Every message a node sends back is checked for form here (numpy arrays only, finite
non-negative example counts, known finite metrics); anything else is that node's error with
its reason, never a crash of the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from hub.training.aggregation import Weights
from hub.training.rounds import Reply
from protos import flower_keys as keys
from protos.flower_weights import from_record, to_record

TTL_MARGIN_S = 30.0  # a message outlives its round's deadline by this much, then Flower drops it
# How often the ServerApp asks the SuperLink for replies. Flower's own send_and_receive waits 3 s
# between pulls, which a round pays once per message it sends (fetch, train, adopt); a pull is
# one small request on loopback.
PULL_INTERVAL_S = 0.25


def _reply(message: Message) -> Reply:
    """What a node sent, checked for form; anything malformed is that node's error, not ours."""
    if message.has_error():
        return Reply(error=message.error.reason or f"node error {message.error.code}")
    try:
        content = message.content
        records, metric_records = content.array_records, content.metric_records
        weights = from_record(content[keys.WEIGHTS]) if keys.WEIGHTS in records else None
        metrics = dict(content[keys.METRICS]) if keys.METRICS in metric_records else {}
        examples = metrics.pop(keys.NUM_EXAMPLES, 0)
        if not isinstance(examples, int | float) or not np.isfinite(examples) or examples < 0:
            raise ValueError(f"{keys.NUM_EXAMPLES} is {examples!r}")
        kept = {k: float(metrics[k]) for k in keys.NODE_METRICS
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
            content = RecordDict({keys.CONFIG: ConfigRecord(config)})
            if weights is not None:
                content[keys.WEIGHTS] = to_record(weights)
            messages.append(
                Message(
                    content=content, dst_node_id=node, message_type=kind, ttl=timeout + TTL_MARGIN_S
                )
            )
        replies = self._exchange(messages, timeout)
        # Keyed by the message answered: Flower's own error replies (node gone, message
        # expired) come from the SuperLink, not from the node they are about.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        return {
            sent_to[r.metadata.reply_to_message_id]: _reply(r)
            for r in replies
            if r.metadata.reply_to_message_id in sent_to
        }

    def _exchange(self, messages: list[Message], timeout: float) -> list[Message]:
        """Flower's send_and_receive, pulling every PULL_INTERVAL_S instead of every 3 s."""
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = list(self.grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(PULL_INTERVAL_S)
        return replies

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
