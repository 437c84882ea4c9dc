"""The hub's SQL schema: the one source of truth for tables; Alembic migrations follow it.

Amounts are integers in micro-credits (1 credit = 1,000,000), so sums are exact on every
backend. Times are ISO-8601 UTC strings with microseconds ("2026-11-23T07:25:00.123456Z"):
they sort as text and round-trip byte-for-byte through SQLite and PostgreSQL, which the hash
chain needs.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    """The hub's treasury, one account per node ("node:<node id>") and one per API key
    ("key:<key id>"), named by the ledger. `balance` is kept by every append, in the same
    transaction, so reading one is one row, not a scan of the ledger; `ledger verify` checks
    it against the entries."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "treasury", "node" or "key"
    created_at: Mapped[str] = mapped_column(String(32))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)  # micro-credits


class ApiKey(Base):
    """A client's key: who may ask, how often, and the account ("key:<key id>") that pays.
    Only the secret's sha256 is stored: a leaked database leaks no usable key."""

    __tablename__ = "api_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public, in the key
    name: Mapped[str] = mapped_column(String(64), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(default=False)  # may read every account and node
    rate_per_min: Mapped[int] = mapped_column(Integer, default=60)  # Asks a minute; 0: no limit
    max_concurrent: Mapped[int] = mapped_column(Integer, default=4)  # Asks at once; 0: no limit
    created_at: Mapped[str] = mapped_column(String(32))
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)


class LedgerEntry(Base):
    """One transfer: debit one account, credit another. Append-only, hash-chained, signed."""

    __tablename__ = "ledger_entries"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    entry_id: Mapped[str] = mapped_column(String(200), unique=True)  # idempotency key
    kind: Mapped[str] = mapped_column(String(32))  # inference_reward, training_reward, penalty
    debit: Mapped[str] = mapped_column(String(80))
    credit: Mapped[str] = mapped_column(String(80))
    amount: Mapped[int] = mapped_column(BigInteger)  # micro-credits, > 0
    ref: Mapped[str] = mapped_column(String(200))  # request id or round id it pays for
    domain: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))  # hub Ed25519 over the hash, hex
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_entry_amount_positive"),
        CheckConstraint("debit <> credit", name="ck_entry_two_accounts"),
        Index("ix_entries_debit", "debit"),
        Index("ix_entries_credit", "credit"),
        Index("ix_entries_ref", "ref"),
        Index("ix_entries_created", "created_at"),
    )


class LedgerHead(Base):
    """The chain's last entry, signed: deleting the newest entries is detected too.

    Its single row is also the write lock: every append updates it in the same transaction.
    """

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class Inference(Base):
    """What the hub routed: one row per request id, whatever the outcome."""

    __tablename__ = "inferences"
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32))
    prompt_sha256: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)  # only if the hub keeps them
    domain: Mapped[str] = mapped_column(String(64), default="")
    candidates: Mapped[str] = mapped_column(Text)  # JSON: node, loglik, posterior
    chosen_node: Mapped[str] = mapped_column(String(64), default="")
    segments: Mapped[str] = mapped_column(Text)  # JSON: node, tokens delivered (fail-overs)
    outcome: Mapped[str] = mapped_column(String(16))  # success, partial, failed, unverified...
    tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column()
    completion_signature: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("ix_inferences_created", "created_at"),)


class Node(Base):
    """The registry: every node ever admitted, so a restarted hub knows its nodes."""

    __tablename__ = "nodes"
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(Text)  # OpenSSH line
    domain: Mapped[str] = mapped_column(String(64))
    # preset and model_version: as long as protos.wire allows (MAX_PRESET_CHARS, ..._VERSION_...)
    preset: Mapped[str] = mapped_column(String(64), default="")
    address: Mapped[str] = mapped_column(String(100), default="")  # peer address, last connect
    model_version: Mapped[str] = mapped_column(String(64), default="")
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    reputation: Mapped[float] = mapped_column(default=1.0)  # routing prior, [0, 1]; 0: a liar
    admitted_at: Mapped[str] = mapped_column(String(32))
    last_seen: Mapped[str] = mapped_column(String(32))
    revoked: Mapped[bool] = mapped_column(default=False)
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)
    revoked_reason: Mapped[str] = mapped_column(Text, default="")
    # its id on the training plane (a uint64 from Flower's SuperLink, as text), once registered
    flower_node_id: Mapped[str | None] = mapped_column(String(20), nullable=True, default=None)
    role: Mapped[str] = mapped_column(String(16), default="domain")  # or "generalist"
    base: Mapped[str] = mapped_column(String(64), default="")  # sha256 of the base; "": scratch
    __table_args__ = (
        Index("ix_nodes_domain", "domain"),
        Index("ix_nodes_revoked_at", "revoked_at"),  # a serving hub polls for new revocations
    )


class FraudProof(Base):
    """A node's signed claim the audit found false, or could not check because the node would
    not send the model that signed it: the evidence, verifiable with the node's public key
    alone (`statement` is what it signed, `signature` its signature)."""

    __tablename__ = "fraud_proofs"
    proof_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # request id : node
    created_at: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # false-score, unavailable
    request_id: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(64))
    claimed_loglik: Mapped[float] = mapped_column()
    audited_loglik: Mapped[float | None] = mapped_column(nullable=True)
    statement: Mapped[str] = mapped_column(Text)  # hex of protos.signing.score_bytes(...)
    signature: Mapped[str] = mapped_column(Text)  # hex
    detail: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("ix_fraud_proofs_node", "node_id"),)


class JoinToken(Base):
    """A single-use admission token; only its sha256 is stored."""

    __tablename__ = "join_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str] = mapped_column(String(32))
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    used_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TrainingRound(Base):
    """A completed federated round (written by the federation plane)."""

    __tablename__ = "training_rounds"
    round_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    participants: Mapped[str] = mapped_column(Text)  # JSON: node, examples
    rejected: Mapped[str] = mapped_column(Text, default="[]")  # JSON: node, reason
    metrics: Mapped[str] = mapped_column(Text, default="{}")
    weights_sha256: Mapped[str] = mapped_column(String(64), default="")
