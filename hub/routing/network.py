"""The live network: which admitted nodes are connected now, and the router over them.

The registry (SQL) remembers every node ever admitted; this is the part that lives only while
the hub runs: one `NodeConnection` per connected node, its profile in the candidate index, its
reputation as the router's prior. What else must happen when a node is admitted or joins (a
ledger account, a key on the training plane) is the serving process's business: it passes
`on_admit` and `on_join` in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
from sqlalchemy import Engine

from hub.routing.admission import Applicant, admit
from hub.routing.candidates import ProfileIndex
from hub.routing.config import RouterConfig
from hub.routing.connection import NodeConnection
from hub.routing.router import Router
from hub.storage.registry import NodeRecord, NodeRegistry

LAST_SEEN_EVERY_S = 60.0  # how often a heartbeat also refreshes `last_seen` in the registry


class Network:
    def __init__(
        self, engine: Engine, config: RouterConfig,
        on_admit: Callable[[str], None] = lambda node_id: None,
        on_join: Callable[[str, str], None] = lambda node_id, public_key: None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.registry = NodeRegistry(engine)
        self.router = Router(ProfileIndex(), {}, config)
        self.connections: dict[str, NodeConnection] = {}
        self.priors: dict[str, float] = {}
        self.asks = 0  # Ask calls in flight, so shutdown can let them finish
        self.on_admit = on_admit  # blocking, before the welcome: e.g. the node's ledger account
        self.on_join = on_join  # on the event loop, after the welcome: must not block
        self._persisted: dict[str, float] = {}

    def admit(self, applicant: Applicant, address: str) -> NodeRecord:
        """Admit a node whose proof checked out (blocking: registry and tokens in SQL)."""
        record = admit(self.engine, self.registry, applicant, address)
        self.on_admit(applicant.node_id)
        return record

    def attach(self, applicant: Applicant, reputation: float) -> NodeConnection:
        """Route to this node from now on, replacing an older stream of the same node."""
        conn = NodeConnection(
            applicant.node_id, applicant.domain, applicant.public_key, applicant.model_version,
            applicant.capacity,
        )  # fmt: skip
        old = self.connections.get(conn.node_id)
        if old is not None:
            old.close("replaced by a new connection from the same node")
        self.connections[conn.node_id] = conn
        self.router.links[conn.node_id] = conn
        self.router.index.put(conn.node_id, np.asarray(applicant.profile))
        self.priors[conn.node_id] = reputation
        self.on_join(conn.node_id, conn.public_key)
        return conn

    def detach(self, conn: NodeConnection) -> None:
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
            self.router.links.pop(conn.node_id, None)
            self.router.index.remove(conn.node_id)

    async def heard(self, conn: NodeConnection, version_changed: bool) -> None:
        """Persist last_seen now and then, and a new model version at once."""
        now = time.monotonic()
        if version_changed or now - self._persisted.get(conn.node_id, 0.0) > LAST_SEEN_EVERY_S:
            self._persisted[conn.node_id] = now
            await asyncio.to_thread(self.registry.seen, conn.node_id, conn.model_version)

    def close_all(self, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(reason)
