"""The hub's Prometheus metrics (prometheus_client, one registry per hub): Asks by outcome,
time to first token and total latency, tokens, each node's in-flight requests, failures and
missed scores, ledger write latency, and requests refused before routing by reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Serving(Protocol):
    domain: str
    in_flight: int
    capacity: int


class _Nodes(Collector):
    """Each connected node's requests in flight, as it last reported (read at scrape time)."""

    def __init__(self, connections: Callable[[], Mapping[str, Serving]]) -> None:
        self.connections = connections

    def collect(self) -> Iterator[GaugeMetricFamily]:
        busy = GaugeMetricFamily("swarm_node_in_flight", "requests a node is serving now",
                                 labels=["node", "domain"])  # fmt: skip
        capacity = GaugeMetricFamily("swarm_node_capacity", "requests a node serves at once",
                                     labels=["node", "domain"])  # fmt: skip
        for node_id, conn in list(self.connections().items()):
            busy.add_metric([node_id[:16], conn.domain], conn.in_flight)
            capacity.add_metric([node_id[:16], conn.domain], conn.capacity)
        yield busy
        yield capacity


class Metrics:
    def __init__(self, connections: Callable[[], Mapping[str, Serving]] = dict) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.asks = Counter("swarm_asks", "Asks answered or failed, by outcome", ["outcome"],
                            registry=r)  # fmt: skip
        self.rejected = Counter("swarm_rejected_requests", "requests refused before routing",
                                ["reason"], registry=r)  # fmt: skip
        self.first_token = Histogram("swarm_time_to_first_token_seconds",
                                     "from request to the answer's first text",
                                     buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.duration = Histogram("swarm_ask_duration_seconds", "from request to its end",
                                  buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.tokens = Counter("swarm_completion_tokens", "tokens of answers paid for",
                              registry=r)  # fmt: skip
        self.node_failures = Counter("swarm_node_failures", "nodes that failed mid-answer",
                                     ["node"], registry=r)  # fmt: skip
        self.scores_missed = Counter("swarm_scores_missed",
                                     "scores a node gave late (past the deadline) or not at all",
                                     ["node", "reason"], registry=r)  # fmt: skip
        self.ledger_write = Histogram("swarm_ledger_write_seconds",
                                      "an answer's wait for its ledger record to be durable",
                                      buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        r.register(_Nodes(connections))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
