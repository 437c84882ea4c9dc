"""The SQL ledger: records inferences, rounds, grants and penalties as chained transfers (the
reading side, balances to verification, is reader.py's).

Appends take the head row's lock (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
SQLite) for the length of one transaction, so concurrent writers in any number of processes
extend one chain; a batch of records is one transaction, so a crash leaves none of it. What an
entry is and what a reward comes to are decided in entries.py and rewards.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.ledger.entries import (
    GENESIS,
    TREASURY,
    Entry,
    LedgerError,
    Transfer,
    chain,
    head_bytes,
    key_account,
    node_account,
    payee_account,
)
from hub.ledger.reader import LedgerReader, _entry
from hub.ledger.rewards import (
    InferenceRecord,
    Rewards,
    charged,
    inference_transfers,
    round_transfers,
)
from hub.storage.engine import writing
from hub.storage.schema import Account, Inference, LedgerEntry, LedgerHead, TrainingRound
from hub.storage.timestamps import now_iso


@dataclass
class RecordResult:
    request_id: str
    recorded: bool  # False: this request id was already in the ledger
    entries: list[str] = field(default_factory=list)
    charged: int = 0  # what the payer paid, micro-credits


class Ledger(LedgerReader):
    """The ledger over one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, key: Ed25519PrivateKey | None, public: Ed25519PublicKey,
                 rewards: Rewards | None = None) -> None:  # fmt: skip
        super().__init__(engine, public)
        self.key = key  # None: read-only (queries, verify)
        self.rewards = rewards or Rewards()

    # --- writing -------------------------------------------------------------------------

    def ensure_accounts(self, node_ids: Sequence[str], key_ids: Sequence[str] = ()) -> None:
        """Create the treasury and these nodes' and keys' accounts if missing (idempotent,
        race-free)."""
        wanted = (
            {TREASURY: "treasury"}
            | {node_account(n): "node" for n in node_ids}
            | {key_account(k): "key" for k in key_ids}
        )
        with self._write() as conn:
            self._ensure_head(conn)
            self._lock_head(conn)  # serialises account creation with every other writer
            have = self._accounts(conn, set(wanted))
            rows = [
                {"id": a, "kind": k, "created_at": now_iso(), "balance": 0}
                for a, k in wanted.items()
                if a not in have
            ]
            if rows:
                conn.execute(insert(Account), rows)

    def record_inferences(self, records: Sequence[InferenceRecord]) -> list[RecordResult]:
        """Record a batch in one transaction; a request id already present is skipped."""
        key = self._writer_key()
        results: list[RecordResult] = []
        with self._write() as conn:
            head = self._lock_head(conn)
            ids = [r.request_id for r in records]
            seen = set(
                conn.scalars(select(Inference.request_id).where(Inference.request_id.in_(ids)))
            )
            accounts = self._accounts(
                conn,
                {payee_account(n) for r in records for n, _ in r.segments}
                | {r.payer for r in records},
            )
            rows, transfers = [], []
            for record in records:
                if record.request_id in seen:
                    results.append(RecordResult(record.request_id, recorded=False))
                    continue
                seen.add(record.request_id)
                if record.payer not in accounts:
                    raise LedgerError(f"unknown account {record.payer}: it cannot pay")
                for node, _ in record.segments:
                    if payee_account(node) not in accounts:
                        raise LedgerError(f"unknown node {node}: it has no ledger account")
                rows.append(_inference_row(record))
                paid = inference_transfers(record, self.rewards)
                transfers += paid
                results.append(RecordResult(record.request_id, True, [t.entry_id for t in paid],
                                            charged(paid, record.payer)))  # fmt: skip
            if rows:
                conn.execute(insert(Inference), rows)
            self._append(conn, head, transfers, key)
        return results

    def record_round(
        self, round_id: str, domain: str, round_number: int,
        participants: Sequence[tuple[str, int]], by_examples: bool = False,
        metrics: dict[str, Any] | None = None, weights_sha256: str = "",
        rejected: Sequence[dict[str, Any]] = (),
    ) -> bool:  # fmt: skip
        """Record a completed training round and credit its participants; False if known."""
        nodes = [node for node, _ in participants]
        if len(set(nodes)) != len(nodes):
            raise LedgerError(f"round {round_id}: a node is listed twice among the participants")
        for node, examples in participants:
            if not isinstance(examples, int) or isinstance(examples, bool) or examples < 0:
                raise LedgerError(f"round {round_id}: node {node} has {examples!r} examples")
        key = self._writer_key()
        with self._write() as conn:
            head = self._lock_head(conn)
            if conn.scalar(
                select(TrainingRound.round_id).where(TrainingRound.round_id == round_id)
            ):
                return False
            accounts = self._accounts(conn, {node_account(n) for n, _ in participants})
            for node, _ in participants:
                if node_account(node) not in accounts:
                    raise LedgerError(f"unknown node {node}: it has no ledger account")
            conn.execute(
                insert(TrainingRound).values(
                    round_id=round_id,
                    created_at=now_iso(),
                    domain=domain,
                    round=round_number,
                    participants=json.dumps([{"node": n, "examples": e} for n, e in participants]),
                    rejected=json.dumps(list(rejected)),
                    metrics=json.dumps(metrics or {}),
                    weights_sha256=weights_sha256,
                )
            )
            transfers = round_transfers(round_id, domain, participants, self.rewards, by_examples)
            self._append(conn, head, transfers, key)
        return True

    def penalize(self, node_id: str, micro: int, reason: str, ref: str) -> Entry:
        """Move `micro` from a node back to the treasury, with a reason (idempotent by ref)."""
        if micro <= 0:
            raise LedgerError("a penalty must be a positive amount")
        if not reason.strip():
            raise LedgerError("a penalty needs a reason")
        account = self.resolve_node(node_id)
        transfer = Transfer(
            f"penalty:{ref}", "penalty", account, TREASURY, micro, ref, "", reason.strip()
        )
        return self._append_once(transfer)

    def grant(self, account: str, micro: int, reason: str, ref: str) -> Entry:
        """Fund an account from the treasury: the only way credits reach an API key. Idempotent
        by `ref`; the account must exist."""
        if micro <= 0:
            raise LedgerError("a grant must be a positive amount")
        if account == TREASURY:
            raise LedgerError("the treasury cannot grant to itself")
        transfer = Transfer(f"grant:{ref}", "grant", TREASURY, account, micro, ref, "",
                            reason.strip() or "granted")  # fmt: skip
        return self._append_once(transfer)

    def _append_once(self, transfer: Transfer) -> Entry:
        """Append one transfer between existing accounts, or return the entry already
        recorded under its entry id (a retried penalty or grant is recorded once)."""
        key = self._writer_key()
        with self._write() as conn:
            head = self._lock_head(conn)
            missing = {transfer.debit, transfer.credit} - self._accounts(
                conn, {transfer.debit, transfer.credit}
            )
            if missing:
                raise LedgerError(f"unknown account {min(missing)}")
            existing = conn.execute(
                select(LedgerEntry).where(LedgerEntry.entry_id == transfer.entry_id)
            ).first()
            if existing is not None:
                return _entry(existing)
            return self._append(conn, head, [transfer], key)[0]

    def _writer_key(self) -> Ed25519PrivateKey:
        if self.key is None:
            raise LedgerError("this ledger was opened read-only (no hub signing key)")
        return self.key

    def _write(self):  # type: ignore[no-untyped-def]
        return _translate_errors(writing(self.engine).begin())

    def _ensure_head(self, conn: Connection) -> None:
        """Create the genesis head once; a concurrent creator's row wins without an error."""
        if conn.scalar(select(LedgerHead.id)) is not None:
            return
        signature = self._writer_key().sign(head_bytes(0, GENESIS)).hex()
        values = {"id": 1, "seq": 0, "hash": GENESIS, "signature": signature}
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(LedgerHead).values(**values).on_conflict_do_nothing())
        else:  # SQLite: BEGIN IMMEDIATE already made this transaction the only writer
            conn.execute(insert(LedgerHead).values(**values))

    def _lock_head(self, conn: Connection) -> tuple[int, str]:
        row = conn.execute(select(LedgerHead.seq, LedgerHead.hash).with_for_update()).first()
        if row is None:
            raise LedgerError("the ledger has no accounts yet: register a node first")
        return row.seq, row.hash

    def _accounts(self, conn: Connection, wanted: set[str]) -> set[str]:
        """Which of these accounts exist."""
        return set(conn.scalars(select(Account.id).where(Account.id.in_(wanted))))

    def _append(
        self, conn: Connection, head: tuple[int, str], transfers: Sequence[Transfer],
        key: Ed25519PrivateKey,
    ) -> list[Entry]:  # fmt: skip
        if not transfers:
            return []
        entries = chain(transfers, *head, now_iso(), key)
        seq, prev = entries[-1].seq, entries[-1].hash
        conn.execute(insert(LedgerEntry), [dict(vars(e)) for e in entries])  # flat: no deepcopy
        deltas: dict[str, int] = {}
        for t in transfers:
            deltas[t.debit] = deltas.get(t.debit, 0) - t.amount
            deltas[t.credit] = deltas.get(t.credit, 0) + t.amount
        conn.execute(
            update(Account).where(Account.id == bindparam("account"))
            .values(balance=Account.balance + bindparam("delta")),
            [{"account": a, "delta": d} for a, d in sorted(deltas.items()) if d],
        )  # fmt: skip
        conn.execute(
            update(LedgerHead)
            .where(LedgerHead.id == 1)
            .values(seq=seq, hash=prev, signature=key.sign(head_bytes(seq, prev)).hex())
        )
        return entries


def _inference_row(record: InferenceRecord) -> dict[str, Any]:
    chosen = record.segments[-1][0] if record.segments else ""
    return {
        "request_id": record.request_id,
        "created_at": now_iso(),
        "prompt_sha256": record.prompt_sha256,
        "prompt": record.prompt,
        "domain": record.domain,
        "candidates": json.dumps(list(record.candidates)),
        "chosen_node": chosen,
        "segments": json.dumps(
            [
                {"node": n, "tokens": t, **({"role": "draft"} if i < record.draft_segments else {})}
                for i, (n, t) in enumerate(record.segments)
            ]
        ),
        "outcome": record.outcome,
        "tokens": sum(t for _, t in record.segments),
        "latency_ms": float(record.latency_ms),
        "completion_signature": record.completion_signature,
    }


class _translate_errors:
    """Wrap a transaction so database failures become one-line LedgerErrors."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def __enter__(self) -> Connection:
        try:
            return self.ctx.__enter__()
        except OperationalError as exc:
            raise LedgerError(f"cannot write to the database: {str(exc.orig).strip()}") from None

    def __exit__(self, kind, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        self.ctx.__exit__(kind, exc, tb)
        if isinstance(exc, IntegrityError):
            raise LedgerError(f"the database refused the write: {str(exc.orig).strip()}") from None
        return False
