"""Hundreds of nodes joining at once, as after a hub restart or a network split: every one is
admitted and stays connected while the hub registers them on the training plane. (Reading a
node's peer address off the event loop once left admitted streams unread, and the hub then
dropped healthy nodes as silent.)"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from harness import Hub
from harness.crowd import Crowd
from hub.config import HubConfig
from hub.routing.tokens import create_token
from hub.storage.engine import make_engine
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc

pytestmark = pytest.mark.slow  # a hub process and a crowd of simulated nodes

NODES = 300


def test_a_join_storm_drops_no_healthy_node(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", 0, "--heartbeat", "1")  # silent for 3 s: dropped
    try:
        engine = make_engine(HubConfig.load(hub.home).db_url)
        tokens = [create_token(engine, "sim", timedelta(hours=1)) for _ in range(NODES)]
        engine.dispose()

        async def storm() -> tuple[int, int]:
            crowd = Crowd(hub.address, hub.ca.read_bytes(), tokens)
            await crowd.join()
            await asyncio.sleep(5.0)  # past three heartbeat intervals of every node
            listed = await rpc.SwarmStub(crowd.channels[0]).ListNodes(
                pb.ListNodesRequest(), metadata=hub.metadata
            )
            dropped = crowd.dropped
            await crowd.leave()
            return sum(n.connected for n in listed.nodes), dropped

        connected, dropped = asyncio.run(storm())
        assert (connected, dropped) == (NODES, 0)
        assert "silent" not in hub.output, hub.output[-2000:]
    finally:
        assert hub.stop() == 0
