"""Benchmark the reward ledger on SQLite and PostgreSQL, in one run.

Sustained recorded inferences per second through the group-commit writer with 32 concurrent
request handlers, against the peer measured in the same run: the same ledger writing one
transaction per inference (what a hub without group commit does). Then `verify` over a chain of
100,000 entries. Writes its table into docs/benchmarks.md.

    .venv/bin/python bench/ledger_bench.py [--inferences N] [--verify-entries N] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from harness import machine  # noqa: E402
from hub.ledger.keys import create_signing_key  # noqa: E402
from hub.ledger.ledger import Ledger  # noqa: E402
from hub.ledger.rewards import InferenceRecord  # noqa: E402
from hub.ledger.writer import LedgerWriter  # noqa: E402
from hub.storage.engine import make_engine, sqlite_url, upgrade  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
NODES = [f"{i:016x}" for i in range(1, 33)]
HANDLERS = 32


def record(prefix: str, n: int) -> InferenceRecord:
    return InferenceRecord(
        request_id=f"{prefix}-{n}", prompt_sha256=f"{n:064x}", outcome="success",
        segments=[(NODES[n % len(NODES)], 20 + n % 50)], domain="medicine", latency_ms=40.0,
        candidates=[{"node": NODES[n % len(NODES)], "posterior": 0.93}],
    )  # fmt: skip


def fresh_ledger(url: str, key_path: Path) -> Ledger:
    from hub.ledger.keys import load_signing_key

    engine = make_engine(url)
    upgrade(engine)
    key = load_signing_key(key_path)
    ledger = Ledger(engine, key, key.public_key())
    ledger.ensure_accounts(NODES)
    return ledger


def group_commit_rate(ledger: Ledger, count: int) -> float:
    """Inferences/s with HANDLERS threads each waiting for its own entry to be durable."""
    writer = LedgerWriter(ledger)
    per = count // HANDLERS
    start = time.perf_counter()

    def handler(h: int) -> None:
        for n in range(per):
            writer.record(record(f"g{h}", n))

    threads = [threading.Thread(target=handler, args=(h,)) for h in range(HANDLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    writer.close()
    return per * HANDLERS / elapsed


def per_transaction_rate(ledger: Ledger, count: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        ledger.record_inferences([record("p", n)])
    return count / (time.perf_counter() - start)


def verify_time(ledger: Ledger, entries: int) -> tuple[float, int]:
    for first in range(0, entries, 2000):
        ledger.record_inferences([record("v", n) for n in range(first, first + 2000)])
    start = time.perf_counter()
    result = ledger.verify()
    assert result.ok, result
    return time.perf_counter() - start, result.entries


def postgres_url() -> tuple[str, psycopg.Connection, str]:
    admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    name = f"swarm_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", admin, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inferences", type=int, default=8000)
    parser.add_argument("--peer-inferences", type=int, default=1000)
    parser.add_argument("--verify-entries", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "ledger_key"
        create_signing_key(key_path)
        for backend in ("SQLite (WAL, synchronous=FULL)", "PostgreSQL 15 (local)"):
            cleanup = None
            if backend.startswith("SQLite"):
                urls = [sqlite_url(Path(tmp) / f"{k}.db") for k in ("group", "peer", "verify")]
            else:
                made = [postgres_url() for _ in range(3)]
                urls = [m[0] for m in made]
                cleanup = made
            group = group_commit_rate(fresh_ledger(urls[0], key_path), args.inferences)
            peer = per_transaction_rate(fresh_ledger(urls[1], key_path), args.peer_inferences)
            seconds, entries = verify_time(fresh_ledger(urls[2], key_path), args.verify_entries)
            rows.append((backend, group, peer, seconds, entries))
            print(f"{backend}: {group:.0f}/s group commit, {peer:.0f}/s per transaction, "
                  f"verify {entries} in {seconds:.1f}s", flush=True)  # fmt: skip
            for _, admin, name in cleanup or []:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                admin.close()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Command: "
        f"`bench/ledger_bench.py` ({args.inferences:,} inferences through the group-commit writer "
        f"from {HANDLERS} concurrent handlers, each waiting until its entry is durable; peer: the "
        f"same ledger, one transaction per inference, {args.peer_inferences:,} inferences). Every "
        "inference writes its row and a hash-chained, Ed25519-signed reward entry.",
        "",
        "| backend | recorded inferences/s (group commit) | peer: one transaction each | ratio "
        "| `verify`, entries | `verify` time | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for backend, group, peer, seconds, entries in rows:
        target = (
            f"≥ 2,000/s: {'yes' if group >= 2000 else '**no**'}" if backend.startswith("SQLite")
            else "—"
        )  # fmt: skip
        lines.append(
            f"| {backend} | {group:,.0f} | {peer:,.0f} | {group / peer:.1f}x | {entries:,} | "
            f"{seconds:.1f} s ({entries / seconds:,.0f}/s) | {target} |"
        )
    table = "\n".join(lines)
    publish("ledger", "The reward ledger", table, write=not args.no_write)


if __name__ == "__main__":
    main()
