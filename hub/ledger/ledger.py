"""The SQL ledger: records inferences and rounds as chained transfers, answers balances,
history and tops, verifies and exports the chain.

Appends take the head row's lock (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
SQLite) for the length of one transaction, so concurrent writers in any number of processes
extend one chain; a batch of records is one transaction, so a crash leaves none of it. What an
entry is and what a reward comes to are decided in entries.py and rewards.py.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.ledger.entries import (
    GENESIS,
    TREASURY,
    Entry,
    LedgerError,
    Transfer,
    Verification,
    chain,
    head_bytes,
    node_account,
    verify_chain,
)
from hub.ledger.rewards import InferenceRecord, Rewards, inference_transfers, round_transfers
from hub.storage.engine import writing
from hub.storage.schema import Account, Inference, LedgerEntry, LedgerHead, TrainingRound
from hub.storage.timestamps import now_iso


@dataclass
class RecordResult:
    request_id: str
    recorded: bool  # False: this request id was already in the ledger
    entries: list[str] = field(default_factory=list)


class Ledger:
    """The ledger over one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, key: Ed25519PrivateKey | None, public: Ed25519PublicKey,
                 rewards: Rewards | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.key = key  # None: read-only (queries, verify)
        self.public = public
        self.rewards = rewards or Rewards()

    # --- writing -------------------------------------------------------------------------

    def ensure_accounts(self, node_ids: Sequence[str]) -> None:
        """Create the treasury and these nodes' accounts if missing (idempotent, race-free)."""
        wanted = {TREASURY: "treasury"} | {node_account(n): "node" for n in node_ids}
        with self._write() as conn:
            self._ensure_head(conn)
            self._lock_head(conn)  # serialises account creation with every other writer
            have = self._accounts(conn, set(wanted))
            rows = [
                {"id": a, "kind": k, "created_at": now_iso()}
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
                conn, {node_account(n) for r in records for n, _ in r.segments}
            )
            rows, transfers = [], []
            for record in records:
                if record.request_id in seen:
                    results.append(RecordResult(record.request_id, recorded=False))
                    continue
                seen.add(record.request_id)
                for node, _ in record.segments:
                    if node_account(node) not in accounts:
                        raise LedgerError(f"unknown node {node}: it has no ledger account")
                rows.append(_inference_row(record))
                paid = inference_transfers(record, self.rewards)
                transfers += paid
                results.append(RecordResult(record.request_id, True, [t.entry_id for t in paid]))
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
        key = self._writer_key()
        account = self.resolve_node(node_id)
        transfer = Transfer(
            f"penalty:{ref}", "penalty", account, TREASURY, micro, ref, "", reason.strip()
        )
        with self._write() as conn:
            head = self._lock_head(conn)
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
        conn.execute(
            update(LedgerHead)
            .where(LedgerHead.id == 1)
            .values(seq=seq, hash=prev, signature=key.sign(head_bytes(seq, prev)).hex())
        )
        return entries

    # --- reading -------------------------------------------------------------------------

    def resolve_node(self, node: str) -> str:
        """The account of a node given its id or a unique prefix (at least 6 characters)."""
        node = node.removeprefix("node:")
        with self.engine.connect() as conn:
            matches = list(
                conn.scalars(
                    select(Account.id).where(
                        Account.id.startswith(node_account(node), autoescape=True)
                    )
                )
            )
        if node_account(node) in matches:
            return node_account(node)
        if len(node) < 6 or not matches:
            raise LedgerError(f"unknown node {node!r}; `slm-hub ledger balance` lists them")
        if len(matches) > 1:
            raise LedgerError(f"node prefix {node!r} is ambiguous: {len(matches)} nodes match")
        return matches[0]

    def latest_weights(self, domain: str) -> str | None:
        """The hash of the domain's newest recorded global model, if a round made one."""
        with self.engine.connect() as conn:
            return conn.scalar(
                select(TrainingRound.weights_sha256)
                .where(TrainingRound.domain == domain, TrainingRound.weights_sha256 != "")
                .order_by(TrainingRound.created_at.desc(), TrainingRound.round.desc())
                .limit(1)
            )

    def balances(self) -> dict[str, int]:
        """Every account's balance (credits in minus credits out), treasury included."""
        with self.engine.connect() as conn:
            out = {a: 0 for a in conn.scalars(select(Account.id))}
            credits = select(LedgerEntry.credit, func.sum(LedgerEntry.amount)).group_by(
                LedgerEntry.credit
            )
            debits = select(LedgerEntry.debit, func.sum(LedgerEntry.amount)).group_by(
                LedgerEntry.debit
            )
            for account, total in conn.execute(credits):
                out[account] = out.get(account, 0) + int(total)
            for account, total in conn.execute(debits):
                out[account] = out.get(account, 0) - int(total)
        return out

    def history(
        self, account: str | None = None, since: str | None = None, until: str | None = None,
        kind: str | None = None, limit: int | None = None,
    ) -> list[Entry]:  # fmt: skip
        query = select(LedgerEntry).order_by(LedgerEntry.seq)
        if account is not None:
            query = query.where((LedgerEntry.debit == account) | (LedgerEntry.credit == account))
        if since is not None:
            query = query.where(LedgerEntry.created_at >= since)
        if until is not None:
            query = query.where(LedgerEntry.created_at < until)
        if kind is not None:
            query = query.where(LedgerEntry.kind == kind)
        if limit is not None:
            query = query.order_by(None).order_by(LedgerEntry.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [_entry(r) for r in conn.execute(query)]
        return sorted(rows, key=lambda e: e.seq)

    def top(self, domain: str | None = None, since: str | None = None, limit: int = 10):
        """Nodes by credits earned (rewards in, penalties out) since a time, best first."""
        query = select(LedgerEntry.credit, LedgerEntry.debit, LedgerEntry.amount, LedgerEntry.kind)
        if domain is not None:
            query = query.where(LedgerEntry.domain == domain)
        if since is not None:
            query = query.where(LedgerEntry.created_at >= since)
        earned: dict[str, int] = {}
        count: dict[str, int] = {}
        with self.engine.connect() as conn:
            for credit, debit, amount, kind in conn.execute(query):
                if credit != TREASURY:
                    earned[credit] = earned.get(credit, 0) + amount
                    count[credit] = count.get(credit, 0) + (kind == "inference_reward")
                if debit != TREASURY:
                    earned[debit] = earned.get(debit, 0) - amount
        ranked = sorted(earned.items(), key=lambda kv: -kv[1])[:limit]
        return [(account, amount, count.get(account, 0)) for account, amount in ranked]

    def show(self, request_id: str) -> tuple[dict[str, Any], list[Entry]]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(Inference).where(Inference.request_id == request_id)
            ).mappings().first()  # fmt: skip
            if row is None:
                raise LedgerError(f"no inference with request id {request_id!r}")
            entries = [
                _entry(r)
                for r in conn.execute(
                    select(LedgerEntry)
                    .where(LedgerEntry.ref == request_id)
                    .order_by(LedgerEntry.seq)
                )
            ]
        record = dict(row)
        for key in ("candidates", "segments"):
            record[key] = json.loads(record[key])
        return record, entries

    def iter_entries(self, conn: Connection | None = None, batch: int = 5000) -> Iterator[Entry]:
        """Every entry in seq order, in pages (constant memory over any ledger size).

        The first page has no lower bound, so rows with any seq at all are seen.
        """
        if conn is None:
            with self.engine.connect() as own:
                yield from self.iter_entries(own, batch)
            return
        query = select(LedgerEntry).order_by(LedgerEntry.seq).limit(batch)
        rows = conn.execute(query).all()
        while rows:
            for r in rows:
                yield _entry(r)
            rows = conn.execute(query.where(LedgerEntry.seq > rows[-1].seq)).all()

    def _snapshot(self):  # type: ignore[no-untyped-def]
        """A connection that sees one consistent state for as long as it is open."""
        conn = self.engine.connect()
        if self.engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    def verify(self) -> Verification:
        """Walk the whole chain: sequence, links, hashes, signatures, amounts, and the head."""
        with self._snapshot() as conn:
            return self._verify(conn)

    def _verify(self, conn: Connection) -> Verification:
        head = conn.execute(select(LedgerHead.seq, LedgerHead.hash, LedgerHead.signature)).first()
        return verify_chain(self.iter_entries(conn), None if head is None else tuple(head),
                            self.public)  # fmt: skip

    def export(self, fmt: str) -> Iterator[str]:
        """The whole ledger as CSV or JSON lines, streamed."""
        columns = [f.name for f in Entry.__dataclass_fields__.values()]
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(columns)
            for e in self.iter_entries():
                writer.writerow([getattr(e, c) for c in columns])
                if buf.tell() > 1 << 16:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()
        elif fmt == "json":
            for e in self.iter_entries():
                yield json.dumps(asdict(e)) + "\n"
        else:
            raise LedgerError(f"unknown export format {fmt!r}: use csv or json")


def _entry(row: Any) -> Entry:
    """An Entry from a result row of `select(LedgerEntry)` (Core rows: one column each)."""
    return Entry(**{name: getattr(row, name) for name in Entry.__dataclass_fields__})


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
        "segments": json.dumps([{"node": n, "tokens": t} for n, t in record.segments]),
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
