"""The node registry: every admitted node, persisted, so a restarted hub knows its nodes.

Connection state (which nodes are online right now) is the routing server's; this is what
survives it: identity, domain, model version, capacity, reputation, last seen, revocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from hub.storage.engine import writing
from hub.storage.schema import Node
from hub.storage.timestamps import now_iso
from slm.errors import SLMError


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    public_key: str
    domain: str
    preset: str
    address: str
    model_version: str
    capacity: int
    reputation: float
    admitted_at: str
    last_seen: str
    revoked: bool
    flower_node_id: str | None  # on the training plane, once registered there
    revoked_at: str | None
    revoked_reason: str
    role: str = "domain"  # or "generalist": it drafts, the domain nodes refine
    base: str = ""  # sha256 of the pretrained base its model adapts; "": trained from scratch


MAX_ADDRESS_CHARS = 100  # the column's size; a peer address is shown, never trusted


def _record(row) -> NodeRecord:  # type: ignore[no-untyped-def]
    return NodeRecord(**{name: getattr(row, name) for name in NodeRecord.__dataclass_fields__})


class NodeRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def admit(
        self, node_id: str, public_key: str, domain: str, preset: str, address: str,
        model_version: str, capacity: int, role: str = "domain", base: str = "",
    ) -> NodeRecord:  # fmt: skip
        """Insert a node, or refresh a known one (its reputation and admission time stay)."""
        if capacity < 1:
            raise SLMError(f"capacity must be at least 1, got {capacity}")
        now = now_iso()
        fresh = {
            "public_key": public_key, "domain": domain, "preset": preset,
            "address": address[:MAX_ADDRESS_CHARS],
            "model_version": model_version, "capacity": capacity, "last_seen": now,
            "role": role, "base": base,
        }  # fmt: skip
        with writing(self.engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            statement = insert(Node).values(
                node_id=node_id, admitted_at=now, reputation=1.0, revoked=False, **fresh
            )
            conn.execute(statement.on_conflict_do_update(index_elements=["node_id"], set_=fresh))
        record = self.get(node_id)
        assert record is not None
        return record

    def get(self, node_id: str) -> NodeRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Node.__table__).where(Node.node_id == node_id)).first()
        return None if row is None else _record(row)

    def all(self) -> list[NodeRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Node.__table__).order_by(Node.domain, Node.node_id)).all()
        return [_record(r) for r in rows]

    def seen(self, node_id: str, model_version: str | None = None) -> None:
        """Record a heartbeat (and the model version it reported)."""
        values: dict[str, str] = {"last_seen": now_iso()}
        if model_version:
            values["model_version"] = model_version
        self._update(node_id, values)

    def set_reputation(self, node_id: str, reputation: float) -> None:
        """The node's prior in the routing posterior; 0: routed to no more (a proven lie)."""
        if not 0.0 <= reputation <= 1.0:
            raise SLMError(f"reputation must be in [0, 1], got {reputation}")
        self._update(node_id, {"reputation": reputation})

    def set_flower_node_id(self, node_id: str, flower_node_id: int | None) -> None:
        """Its id on the training plane; None once its key is gone from there."""
        value = None if flower_node_id is None else str(flower_node_id)
        self._update(node_id, {"flower_node_id": value})

    def resolve(self, node: str) -> NodeRecord:
        """A node by id or unique prefix (as the CLI takes it)."""
        if not node:
            raise SLMError("name a node by its id or a unique prefix of it")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Node.__table__).where(Node.node_id.startswith(node, autoescape=True))
                .limit(2)
            ).all()  # fmt: skip
        if not rows:
            raise SLMError(f"no node {node!r} in this hub's registry; see `slm-hub node list`")
        if len(rows) > 1:
            raise SLMError(f"{node!r} names more than one node; give more of its id")
        return _record(rows[0])

    def revoke(self, node_id: str, reason: str) -> NodeRecord:
        """Refuse the node from now on; a serving hub cuts its stream when it sees this
        (`revoked_since`). Revoking it again keeps the first time and reason."""
        record = self.get(node_id)
        if record is None:
            raise SLMError(f"unknown node {node_id}")
        if not record.revoked:
            self._update(node_id, {"revoked": True, "revoked_at": now_iso(),
                                   "revoked_reason": reason})  # fmt: skip
        revoked = self.get(node_id)
        assert revoked is not None
        return revoked

    def revoked_since(self, after: str) -> list[NodeRecord]:
        """Nodes revoked after the timestamp `after` ("" for all), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Node.__table__).where(Node.revoked_at > after).order_by(Node.revoked_at)
            ).all()
        return [_record(r) for r in rows]

    def _update(self, node_id: str, values: dict) -> None:
        with writing(self.engine).begin() as conn:
            done = conn.execute(update(Node).where(Node.node_id == node_id).values(**values))
            if done.rowcount == 0:
                raise SLMError(f"unknown node {node_id}")
