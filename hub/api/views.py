"""What the web pages show, read from the live network and the SQL ledger: plain functions
that return JSON-ready dictionaries (blocking: the routes run them in a thread).

Every string a node chose (its domain, model version, a failure's text) is passed through as
data; the pages put it in the document as text, never as markup. Amounts are credits (the
ledger's micro-credits / 1e6); times are the hub's ISO strings, and every series is bucketed
in SQL, so a view costs a few grouped queries (per account or per minute, not per entry).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from hub.ledger.entries import TREASURY, LedgerError, node_account
from hub.ledger.reader import LedgerReader
from hub.storage.registry import NodeRegistry
from hub.storage.schema import FraudProof, Inference, LedgerEntry, LedgerHead, TrainingRound
from hub.storage.timestamps import iso
from protos import flower_keys as keys

MICRO = 1e6
PERIODS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7),
           "all": None}  # fmt: skip
HISTORY_LIMIT = 200  # a node's newest entries shown
REASON_CHARS = 300  # a rejection's reason is the node's own text: shown cut to this
ROUNDS_LIMIT = 500  # the newest training rounds shown, every domain together
MINUTE = 16  # len("2026-12-03T08:44"): an ISO time cut to its minute
HOUR = 13


class Live(Protocol):
    """A connected node as the routing plane holds it."""

    domain: str
    model_version: str
    capacity: int
    in_flight: int
    last_heard: float


class ViewError(Exception):
    """A view asked for something that is not there (404) or not allowed (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Views:
    engine: Engine
    ledger: LedgerReader
    connections: Mapping[str, Live]
    audits: Mapping[str, Mapping[str, int]]  # node id -> verdict kind -> count, since start

    def nodes(self, admin: bool) -> dict[str, Any]:
        """Every node ever admitted: live state if connected, else what the registry kept.
        Reputations and training ids are the admin's, as in ListNodes."""
        records = NodeRegistry(self.engine).all()
        since = _ago(timedelta(hours=1))
        with self.engine.connect() as conn:
            served = {row.chosen_node: row for row in conn.execute(
                select(Inference.chosen_node, func.count().label("asks"),
                       func.avg(Inference.latency_ms).label("latency_ms"),
                       func.sum(Inference.tokens).label("tokens"))
                .where(Inference.created_at >= since).group_by(Inference.chosen_node))}  # fmt: skip
            failed = dict(
                conn.execute(
                    select(FraudProof.node_id, func.count()).group_by(FraudProof.node_id)
                ).all()
            )
        now = time.monotonic()
        out = []
        for r in records:
            conn = self.connections.get(r.node_id)
            recent = served.get(r.node_id)
            seen = (
                r.last_seen
                if conn is None
                else iso(datetime.now(UTC) - timedelta(seconds=max(0.0, now - conn.last_heard)))
            )
            out.append({
                "node_id": r.node_id, "domain": r.domain,
                "model_version": conn.model_version if conn else r.model_version,
                "status": "revoked" if r.revoked else "connected" if conn else "offline",
                "last_seen": seen,
                "capacity": conn.capacity if conn else r.capacity,
                "in_flight": conn.in_flight if conn else 0,
                "reputation": r.reputation if admin else None,
                "asks_last_hour": int(recent.asks) if recent else 0,
                "latency_ms": round(float(recent.latency_ms), 1) if recent else None,
                "audits_passed": int(self.audits.get(r.node_id, {}).get("honest", 0)),
                "audits_failed": int(failed.get(r.node_id, 0)),
            })  # fmt: skip
        connected = sum(n["status"] == "connected" for n in out)
        return {"nodes": out, "connected": connected, "known": len(out),
                "domains": sorted({r.domain for r in records})}  # fmt: skip

    def traffic(self) -> dict[str, Any]:
        """The last hour, minute by minute: Asks, tokens, mean and worst latency."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(func.substr(Inference.created_at, 1, MINUTE).label("minute"),
                       func.count().label("asks"), func.sum(Inference.tokens).label("tokens"),
                       func.avg(Inference.latency_ms).label("mean"),
                       func.max(Inference.latency_ms).label("worst"))
                .where(Inference.created_at >= _ago(timedelta(hours=1)))
                .group_by("minute").order_by("minute")
            ).all()  # fmt: skip
        return {"series": [{"t": _epoch(r.minute), "asks": int(r.asks), "tokens": int(r.tokens),
                            "latency_ms": round(float(r.mean), 1),
                            "worst_ms": round(float(r.worst), 1)} for r in rows]}  # fmt: skip

    def rewards(self, period: str, domain: str) -> dict[str, Any]:
        """Every balance, the leaderboard of the period and domain, credits paid over time."""
        if period not in PERIODS:
            raise ViewError(400, f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        span = PERIODS[period]
        since = None if span is None else _ago(span)
        top = self.ledger.top(domain or None, since, limit=50, prefix=node_account(""))
        balances = self.ledger.balances()
        spans = {"hour": MINUTE, "day": HOUR}
        cut = spans.get(period, 10)  # the week and all: by day
        paid = select(
            func.substr(LedgerEntry.created_at, 1, cut).label("at"),
            func.sum(LedgerEntry.amount).label("amount"),
        )
        paid = paid.where(LedgerEntry.credit.startswith(node_account("")))
        if since is not None:
            paid = paid.where(LedgerEntry.created_at >= since)
        if domain:
            paid = paid.where(LedgerEntry.domain == domain)
        with self.engine.connect() as conn:
            series = conn.execute(paid.group_by("at").order_by("at")).all()
        return {
            "period": period, "domain": domain,
            "leaderboard": [{"account": a, "node_id": a.removeprefix(node_account("")),
                             "earned": n / MICRO, "answers": c}
                            for a, n, c in top],
            "balances": [{"account": a, "credits": b / MICRO}
                         for a, b in sorted(balances.items(), key=lambda kv: -kv[1])],
            "treasury": balances.get(TREASURY, 0) / MICRO,
            "paid": [{"t": _epoch(r.at), "credits": int(r.amount) / MICRO} for r in series],
        }  # fmt: skip

    def chain(self) -> dict[str, Any]:
        """The ledger's signed head: its length and newest hash (one row)."""
        with self.engine.connect() as conn:
            head = conn.execute(select(LedgerHead.seq, LedgerHead.hash)).first()
        return {"length": 0 if head is None else int(head.seq),
                "head": "" if head is None else head.hash}  # fmt: skip

    def node_history(self, node: str) -> dict[str, Any]:
        """One node's balance, its newest ledger entries, and the audit's evidence against it."""
        record = NodeRegistry(self.engine).get(node)
        if record is None:
            raise ViewError(404, f"no node {node!r} in this hub's registry")
        account = node_account(record.node_id)
        entries = self.ledger.history(account, limit=HISTORY_LIMIT)
        with self.engine.connect() as conn:
            proofs = conn.execute(
                select(FraudProof.created_at, FraudProof.kind, FraudProof.detail)
                .where(FraudProof.node_id == record.node_id).order_by(FraudProof.created_at)
            ).all()  # fmt: skip
        try:
            balance = self.ledger.balance(account)
        except LedgerError:  # admitted, but its account not yet opened
            balance = 0
        return {
            "node_id": record.node_id, "domain": record.domain,
            "balance": balance / MICRO,
            "entries": [{"seq": e.seq, "at": e.created_at, "kind": e.kind, "ref": e.ref,
                         "credits": (e.amount if e.credit == account else -e.amount) / MICRO,
                         "reason": e.reason} for e in reversed(entries)],
            "proofs": [{"at": p.created_at, "kind": p.kind, "detail": p.detail} for p in proofs],
        }  # fmt: skip

    def training(self) -> dict[str, Any]:
        """Runs and rounds per domain, newest first: participants, rejections, losses, models."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TrainingRound).order_by(TrainingRound.created_at.desc()).limit(ROUNDS_LIMIT)
            ).all()  # fmt: skip
        domains: dict[str, dict[str, dict[str, Any]]] = {}
        for r in reversed(rows):
            metrics = _json(r.metrics, {})
            run_id = str(metrics.get("run_id") or r.round_id.rsplit(":", 1)[0])
            runs = domains.setdefault(r.domain, {})
            run = runs.setdefault(run_id, {"run_id": run_id, "domain": r.domain, "rounds": [],
                                           "strategy": metrics.get("strategy", "")})  # fmt: skip
            run["rounds"].append({
                "round": r.round, "at": r.created_at,
                "participants": _json(r.participants, []),
                "rejected": [_rejection(x) for x in _json(r.rejected, []) if isinstance(x, dict)],
                "train_loss": _number(metrics.get(keys.TRAIN_LOSS)),
                "val_loss": _number(metrics.get(keys.VAL_LOSS)),
                "model": r.weights_sha256,
            })  # fmt: skip
        return {"domains": [{"domain": d, "runs": list(reversed(list(runs.values())))}
                            for d, runs in sorted(domains.items())]}  # fmt: skip


def _ago(span: timedelta) -> str:
    return iso(datetime.now(UTC) - span)


def _epoch(prefix: str) -> int:
    """Seconds since 1970 of an ISO time cut to its minute, hour or day."""
    filled = prefix + "0000-01-01T00:00"[len(prefix):]  # fmt: skip
    return int(datetime.fromisoformat(filled).replace(tzinfo=UTC).timestamp())


def _json(text: str, default: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def _rejection(item: dict[str, Any]) -> dict[str, str]:
    return {
        "node": str(item.get("node", ""))[:64],
        "reason": str(item.get("reason", ""))[:REASON_CHARS],
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
