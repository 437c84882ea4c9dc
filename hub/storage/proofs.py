"""Fraud proofs: the audit's evidence against a node, kept beside the registry."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from hub.storage.engine import writing
from hub.storage.schema import FraudProof
from hub.storage.timestamps import now_iso

KINDS = ("false-score", "unavailable")


@dataclass(frozen=True)
class Proof:
    node_id: str
    kind: str  # one of KINDS
    request_id: str
    model_version: str
    claimed_loglik: float
    audited_loglik: float | None
    statement: bytes  # what the node signed
    signature: bytes
    detail: str = ""


def record_proof(engine: Engine, proof: Proof) -> bool:
    """Keep the evidence; False if this claim was judged already (one proof per claim)."""
    proof_id = f"{proof.request_id}:{proof.node_id}"
    with writing(engine).begin() as conn:
        if conn.execute(select(FraudProof.proof_id).where(FraudProof.proof_id == proof_id)).first():
            return False
        conn.execute(FraudProof.__table__.insert().values(
            proof_id=proof_id, created_at=now_iso(), node_id=proof.node_id, kind=proof.kind,
            request_id=proof.request_id, model_version=proof.model_version,
            claimed_loglik=proof.claimed_loglik, audited_loglik=proof.audited_loglik,
            statement=proof.statement.hex(), signature=proof.signature.hex(),
            detail=proof.detail,
        ))  # fmt: skip
    return True


def proofs_of(engine: Engine, node_id: str | None = None) -> list[Proof]:
    """The evidence against a node (every node: None), oldest first."""
    table = FraudProof.__table__
    query = select(table).order_by(table.c.created_at)
    if node_id is not None:
        query = query.where(table.c.node_id == node_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Proof(r.node_id, r.kind, r.request_id, r.model_version, r.claimed_loglik,
              r.audited_loglik, bytes.fromhex(r.statement), bytes.fromhex(r.signature), r.detail)
        for r in rows
    ]  # fmt: skip
