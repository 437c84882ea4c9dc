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


def _record(row) -> NodeRecord:  # type: ignore[no-untyped-def]
    return NodeRecord(**{name: getattr(row, name) for name in NodeRecord.__dataclass_fields__})


class NodeRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def admit(
        self, node_id: str, public_key: str, domain: str, preset: str, address: str,
        model_version: str, capacity: int,
    ) -> NodeRecord:  # fmt: skip
        """Insert a node, or refresh a known one (its reputation and admission time stay)."""
        if capacity < 1:
            raise SLMError(f"capacity must be at least 1, got {capacity}")
        now = now_iso()
        fresh = {
            "public_key": public_key, "domain": domain, "preset": preset, "address": address,
            "model_version": model_version, "capacity": capacity, "last_seen": now,
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
        if not 0.0 < reputation <= 1.0:
            raise SLMError(f"reputation must be in (0, 1], got {reputation}")
        self._update(node_id, {"reputation": reputation})

    def set_flower_node_id(self, node_id: str, flower_node_id: int) -> None:
        self._update(node_id, {"flower_node_id": str(flower_node_id)})

    def revoke(self, node_id: str) -> None:
        self._update(node_id, {"revoked": True})

    def _update(self, node_id: str, values: dict) -> None:
        with writing(self.engine).begin() as conn:
            done = conn.execute(update(Node).where(Node.node_id == node_id).values(**values))
            if done.rowcount == 0:
                raise SLMError(f"unknown node {node_id}")
