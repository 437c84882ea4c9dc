"""The live network: which admitted nodes are connected now, and the router over them.

The registry (SQL) remembers every node ever admitted; this is the part that lives only while
the hub runs: one `NodeConnection` per connected node, its profile in the candidate index, its
reputation as the router's prior. What else must happen when a node is admitted or joins (a
ledger account, a key on the training plane) is the serving process's business: it passes
`on_admit` and `on_join` in.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger("slm-hub")

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
        self.revoked: dict[str, str] = {}  # node id -> why, once the operator revoked it
        self._persisted: dict[str, float] = {}
        self._writing: dict[str, asyncio.Task] = {}  # a node's registry write under way
        self._stale: set[str] = set()  # nodes heard from again while theirs was under way

    def admit(self, applicant: Applicant, address: str) -> NodeRecord:
        """Admit a node whose proof checked out (blocking: registry and tokens in SQL)."""
        record = admit(self.engine, self.registry, applicant, address)
        self.on_admit(applicant.node_id)
        return record

    def attach(self, applicant: Applicant, reputation: float) -> NodeConnection:
        """Route to this node from now on, replacing an older stream of the same node."""
        conn = NodeConnection(
            applicant.node_id, applicant.domain, applicant.public_key, applicant.model_version,
            applicant.capacity, applicant.role, applicant.refines, applicant.centroid,
            applicant.words_sha256,
        )  # fmt: skip
        if conn.node_id in self.revoked:  # revoked while its handshake was under way
            conn.close(self.revoked[conn.node_id], "PERMISSION_DENIED")
            return conn
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

    def revoke(self, node_id: str, reason: str) -> None:
        """Refuse the node from now on, whatever stream it has or opens (`cut_revoked` ends
        the ones it has)."""
        self.revoked[node_id] = f"node {node_id} was revoked by the hub operator" + (
            f": {reason}" if reason else ""
        )

    def cut_revoked(self) -> list[str]:
        """End the streams of revoked nodes with PERMISSION_DENIED and route to them no more;
        the nodes that were connected."""
        cut = []
        for node_id in self.revoked.keys() & self.connections.keys():
            conn = self.connections[node_id]
            self.detach(conn)
            conn.close(self.revoked[node_id], "PERMISSION_DENIED")
            cut.append(node_id)
        return cut

    def heard(self, conn: NodeConnection, version_changed: bool) -> None:
        """Persist last_seen now and then, and a new model version at once, in the background:
        reading a node's stream never waits for the database (under a join storm the write
        queue is seconds long, and a node whose heartbeats go unread is dropped as silent).
        One write per node at a time, the latest state last."""
        now = time.monotonic()
        if version_changed or now - self._persisted.get(conn.node_id, 0.0) > LAST_SEEN_EVERY_S:
            self._persisted[conn.node_id] = now
            if conn.node_id in self._writing:
                self._stale.add(conn.node_id)  # written again when the write under way ends
            else:
                self._write_seen(conn)

    def _write_seen(self, conn: NodeConnection) -> None:
        write = asyncio.to_thread(self.registry.seen, conn.node_id, conn.model_version)
        task = asyncio.create_task(write)
        self._writing[conn.node_id] = task
        task.add_done_callback(lambda done: self._seen_written(conn, done))

    def _seen_written(self, conn: NodeConnection, task: asyncio.Task) -> None:
        del self._writing[conn.node_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("could not record a heartbeat of %s: %s", conn.node_id, task.exception())
        if conn.node_id in self._stale:
            self._stale.discard(conn.node_id)
            self._write_seen(conn)

    def close_all(self, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(reason)
