"""Reading the SQL ledger: balances, history, tops, one inference's record, the chain walked
and verified, the whole ledger exported. `Ledger` (ledger.py) adds the writes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, case, func, select

from hub.ledger.entries import (
    TREASURY,
    Entry,
    LedgerError,
    Verification,
    node_account,
    verify_chain,
)
from hub.storage.schema import Account, Inference, LedgerEntry, LedgerHead, TrainingRound


class LedgerReader:
    """The ledger over one database, read-only. Thread-safe."""

    def __init__(self, engine: Engine, public: Ed25519PublicKey) -> None:
        self.engine = engine
        self.public = public

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

    def latest_weights(self, domain: str, base: str | None = None) -> str | None:
        """The hash of the domain's newest recorded global model, if a round made one; with
        `base`, the newest of the rounds that averaged adapters of that base ("": whole models),
        so a domain whose nodes move to a base (or off one) never starts from the other kind.
        A round recorded before rounds named their base matches any."""
        query = (
            select(TrainingRound.weights_sha256, TrainingRound.metrics)
            .where(TrainingRound.domain == domain, TrainingRound.weights_sha256 != "")
            .order_by(TrainingRound.created_at.desc(), TrainingRound.round.desc())
        )
        with self.engine.connect() as conn:
            for sha, metrics in conn.execute(query):
                if base is None:
                    return str(sha)
                try:
                    recorded = json.loads(metrics or "{}").get("base", base)
                except (ValueError, AttributeError):
                    recorded = base
                if recorded == base:
                    return str(sha)
        return None

    def balance(self, account: str) -> int:
        """One account's balance: one row, whatever the ledger's length."""
        with self.engine.connect() as conn:
            value = conn.scalar(select(Account.balance).where(Account.id == account))
        if value is None:
            raise LedgerError(f"unknown account {account}")
        return int(value)

    def balances(self) -> dict[str, int]:
        """Every account's balance, as kept beside the chain, treasury included."""
        with self.engine.connect() as conn:
            return {a: int(b) for a, b in conn.execute(select(Account.id, Account.balance))}

    def recorded(self, request_id: str) -> bool:
        """Whether an inference with this request id is in the ledger."""
        with self.engine.connect() as conn:
            return conn.scalar(
                select(Inference.request_id).where(Inference.request_id == request_id)
            ) is not None  # fmt: skip

    @staticmethod
    def _summed(conn: Connection) -> dict[str, int]:
        """Every account's balance summed from the entries (credits in minus credits out)."""
        out = {a: 0 for a in conn.scalars(select(Account.id))}
        credits = select(LedgerEntry.credit, func.sum(LedgerEntry.amount)).group_by(
            LedgerEntry.credit
        )
        debits = select(LedgerEntry.debit, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.debit)
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

    def top(self, domain: str | None = None, since: str | None = None, limit: int = 10,
            prefix: str = ""):  # fmt: skip
        """Accounts by credits earned (rewards in, penalties out) since a time, best first;
        `prefix` keeps only accounts whose id starts with it (e.g. `node_account("")`). Two
        grouped queries: the work is per account, not per entry."""
        filters = []
        if domain is not None:
            filters.append(LedgerEntry.domain == domain)
        if since is not None:
            filters.append(LedgerEntry.created_at >= since)
        answers = func.sum(case((LedgerEntry.kind == "inference_reward", 1), else_=0))
        credits = (
            select(LedgerEntry.credit, func.sum(LedgerEntry.amount), answers)
            .where(
                *filters,
                LedgerEntry.credit != TREASURY,
                LedgerEntry.credit.startswith(prefix, autoescape=True),
            )
            .group_by(LedgerEntry.credit)
        )
        debits = (
            select(LedgerEntry.debit, func.sum(LedgerEntry.amount))
            .where(
                *filters,
                LedgerEntry.debit != TREASURY,
                LedgerEntry.debit.startswith(prefix, autoescape=True),
            )
            .group_by(LedgerEntry.debit)
        )
        earned: dict[str, int] = {}
        count: dict[str, int] = {}
        with self.engine.connect() as conn:
            for account, amount, n in conn.execute(credits):
                earned[account] = int(amount)
                count[account] = int(n)
            for account, amount in conn.execute(debits):
                earned[account] = earned.get(account, 0) - int(amount)
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
        result = verify_chain(self.iter_entries(conn), None if head is None else tuple(head),
                              self.public)  # fmt: skip
        if not result.ok:
            return result
        kept = {a: int(b) for a, b in conn.execute(select(Account.id, Account.balance))}
        summed = self._summed(conn)
        for account in sorted(kept.keys() | summed.keys()):
            if kept.get(account, 0) != summed.get(account, 0):
                return Verification(False, result.entries, f"account {account}'s balance "
                                    f"{kept.get(account, 0)} is not what its entries sum to, "
                                    f"{summed.get(account, 0)}: edited?")  # fmt: skip
        return result

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
