"""The reward ledger: append-only, hash-chained, signed transfers between accounts.

Every entry moves a positive amount from one account to another, so balances always sum to
zero. Each carries hash = sha256(prev_hash || canonical bytes) and the hub's Ed25519 signature
over that hash; the head row holds the last (seq, hash), signed too, so deleting the newest
entries is caught as well as editing, deleting or reordering any other. An entry's id is
unique: recording the same inference or round twice credits it once, however often retried.

Appends take the head row's lock (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
SQLite) for the length of one transaction, so concurrent writers in any number of processes
extend one chain; a batch of records is one transaction, so a crash leaves none of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.db import writing
from hub.schema import TREASURY, Account, Inference, LedgerEntry, LedgerHead, TrainingRound
from slm.errors import SLMError

MICRO = 1_000_000  # micro-credits per credit
MAX_CREDITS = 10**9  # one transfer; keeps every sum far inside a 64-bit integer
GENESIS = "0" * 64
OUTCOMES = ("success", "failed", "unverified", "timeout")


class LedgerError(SLMError):
    """A request the ledger refuses; nothing was written."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_account(node_id: str) -> str:
    return f"node:{node_id}"


def parse_credits(text: str) -> int:
    """'1.5' -> 1_500_000 micro-credits; refuses negatives, zero, junk and sub-micro digits."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise LedgerError(f"amount {text!r} is not a number; give credits like 2 or 0.25") from None
    if not value.is_finite() or value <= 0:
        raise LedgerError(f"amount {text!r} must be a positive number of credits")
    if value > MAX_CREDITS:
        raise LedgerError(f"amount {text!r} is larger than the limit of {MAX_CREDITS:,} credits")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise LedgerError(f"amount {text!r} has more than 6 decimal places")
    return int(micro)


def format_credits(micro: int) -> str:
    return f"{Decimal(micro) / MICRO:.6f}"


@dataclass(frozen=True)
class Rewards:
    """What the hub pays, in micro-credits."""

    inference_base: int = 1 * MICRO
    inference_per_token: int = 10_000  # 0.01 credit per delivered token
    training_round: int = 10 * MICRO  # split among a round's participants


@dataclass(frozen=True)
class InferenceRecord:
    """One routed request, as the routing plane reports it."""

    request_id: str
    prompt_sha256: str
    outcome: str  # one of OUTCOMES
    segments: Sequence[tuple[str, int]]  # (node id, tokens it delivered), in stream order
    candidates: Sequence[dict[str, Any]] = ()
    domain: str = ""
    latency_ms: float = 0.0
    completion_signature: str = ""
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id or len(self.request_id) > 100:
            raise LedgerError(f"request id must be 1-100 characters, got {self.request_id!r}")
        if self.outcome not in OUTCOMES:
            raise LedgerError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        for node, tokens in self.segments:
            if not isinstance(tokens, int) or tokens < 0:
                raise LedgerError(f"node {node} delivered {tokens!r} tokens; need an integer >= 0")


@dataclass(frozen=True)
class Entry:
    seq: int
    entry_id: str
    kind: str
    debit: str
    credit: str
    amount: int
    ref: str
    domain: str
    reason: str
    created_at: str
    prev_hash: str = ""
    hash: str = ""
    signature: str = ""

    def canonical(self) -> bytes:
        """The bytes the hash covers: every fact of the entry, nothing derived from it."""
        facts = {
            "seq": self.seq, "entry_id": self.entry_id, "kind": self.kind, "debit": self.debit,
            "credit": self.credit, "amount": self.amount, "ref": self.ref, "domain": self.domain,
            "reason": self.reason, "created_at": self.created_at,
        }  # fmt: skip
        return json.dumps(facts, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def chained(self, prev_hash: str, key: Ed25519PrivateKey) -> Entry:
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + self.canonical()).hexdigest()
        signature = key.sign(bytes.fromhex(digest)).hex()
        return replace(self, prev_hash=prev_hash, hash=digest, signature=signature)


@dataclass(frozen=True)
class Transfer:
    entry_id: str
    kind: str
    debit: str
    credit: str
    amount: int
    ref: str
    domain: str = ""
    reason: str = ""


def split(total: int, weights: Sequence[int]) -> list[int]:
    """Shares of `total` proportional to non-negative integer `weights` (floored); the largest
    weight takes the rounding remainder, so the shares add up to exactly `total` and a zero
    weight always gets zero."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    shares[max(range(len(weights)), key=weights.__getitem__)] += total - sum(shares)
    return shares


def inference_transfers(record: InferenceRecord, rewards: Rewards) -> list[Transfer]:
    """A successful inference pays base + per-token, split by tokens actually delivered."""
    delivered = [(node, tokens) for node, tokens in record.segments if tokens > 0]
    if record.outcome != "success" or not delivered:
        return []
    total_tokens = sum(t for _, t in delivered)
    total = rewards.inference_base + rewards.inference_per_token * total_tokens
    shares = split(total, [t for _, t in delivered])
    return [
        Transfer(
            f"inference:{record.request_id}:{i}",
            "inference_reward",
            TREASURY,
            node_account(node),
            share,
            record.request_id,
            record.domain,
            f"{tokens} of {total_tokens} tokens",
        )
        for i, ((node, tokens), share) in enumerate(zip(delivered, shares, strict=True))
        if share > 0
    ]


def round_transfers(
    round_id: str, domain: str, participants: Sequence[tuple[str, int]], rewards: Rewards,
    by_examples: bool,
) -> list[Transfer]:  # fmt: skip
    """A completed round's reward, split equally or by examples trained on."""
    weights = [examples if by_examples else 1 for _, examples in participants]
    if sum(weights) <= 0:
        return []
    shares = split(rewards.training_round, weights)
    return [
        Transfer(
            f"round:{round_id}:{node}",
            "training_reward",
            TREASURY,
            node_account(node),
            share,
            round_id,
            domain,
            f"{examples} examples",
        )
        for (node, examples), share in zip(participants, shares, strict=True)
        if share > 0
    ]


@dataclass
class Verification:
    ok: bool
    entries: int
    problem: str = ""
    bad_seq: int | None = None
    bad_entry_id: str = ""


@dataclass
class RecordResult:
    request_id: str
    recorded: bool  # False: this request id was already in the ledger
    entries: list[str] = field(default_factory=list)


class Ledger:
    """The ledger over one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, key: Ed25519PrivateKey | None, public: Ed25519PublicKey,
                 rewards: Rewards = Rewards()) -> None:  # fmt: skip
        self.engine = engine
        self.key = key  # None: read-only (queries, verify)
        self.public = public
        self.rewards = rewards

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
        signature = self._writer_key().sign(_head_bytes(0, GENESIS)).hex()
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
        seq, prev = head
        created = now_iso()
        entries = []
        for t in transfers:
            seq += 1
            entry = Entry(
                seq, t.entry_id, t.kind, t.debit, t.credit, t.amount, t.ref, t.domain, t.reason,
                created,
            ).chained(prev, key)  # fmt: skip
            prev = entry.hash
            entries.append(entry)
        conn.execute(insert(LedgerEntry), [dict(vars(e)) for e in entries])  # flat: no deepcopy
        conn.execute(
            update(LedgerHead)
            .where(LedgerHead.id == 1)
            .values(seq=seq, hash=prev, signature=key.sign(_head_bytes(seq, prev)).hex())
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
        prev, expected_seq, n = GENESIS, 1, 0
        for e in self.iter_entries(conn):
            n += 1
            problem = ""
            if e.seq != expected_seq:
                problem = f"entry {expected_seq} is missing (next found is {e.seq}): deleted?"
            elif e.prev_hash != prev:
                problem = "does not link to the entry before it: reordered or one deleted?"
            elif hashlib.sha256(bytes.fromhex(prev) + e.canonical()).hexdigest() != e.hash:
                problem = "its contents do not match its hash: edited?"
            elif not _signed_by(self.public, e.signature, bytes.fromhex(e.hash)):
                problem = "its signature is not the hub's"
            elif e.amount <= 0 or e.debit == e.credit:
                problem = "it is not a transfer of a positive amount between two accounts"
            if problem:
                return Verification(False, n, problem, e.seq, e.entry_id)
            prev, expected_seq = e.hash, expected_seq + 1
        head = conn.execute(select(LedgerHead.seq, LedgerHead.hash, LedgerHead.signature)).first()
        if head is None:
            return Verification(n == 0, n, "" if n == 0 else "the ledger head row is missing")
        if not _signed_by(self.public, head.signature, _head_bytes(head.seq, head.hash)):
            return Verification(False, n, "the ledger head's signature is not the hub's")
        if (head.seq, head.hash) != (expected_seq - 1, prev):
            return Verification(
                False, n, f"the chain ends at entry {expected_seq - 1} but the signed head says "
                f"{head.seq}: newest entries deleted?", head.seq,
            )  # fmt: skip
        return Verification(True, n)

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


def _signed_by(public: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _head_bytes(seq: int, digest: str) -> bytes:
    return f"swarmllm-ledger-head:{seq}:{digest}".encode()


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
