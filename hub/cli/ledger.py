"""`slm-hub ledger ...`: query, verify, export and correct the reward ledger."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from hub.cli.common import Parents, console, current_engine, parse_when, print_json
from hub.config import HubConfig
from hub.ledger.entries import ENTRY_KINDS, Entry
from hub.ledger.rewards import format_credits, parse_credits
from slm.command import EXIT_ERROR
from slm.errors import SLMError

if TYPE_CHECKING:
    from hub.ledger.ledger import Ledger


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("ledger", help="query and verify the reward ledger")
    led = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    reading = [parents.home, parents.as_json]
    p = led.add_parser("balance", parents=reading, help="balances of nodes and keys")
    p.add_argument("node", nargs="?", help="node id or unique prefix, or an API key's name or "
                   "id (default: every account)")  # fmt: skip
    p.set_defaults(run=cmd_balance)
    p = led.add_parser("history", parents=reading, help="ledger entries, oldest first")
    p.add_argument("--node", help="only entries of this node")
    p.add_argument("--since", help="from this time: 2026-11-01, 2026-11-01T12:00, or 24h / 7d ago")
    p.add_argument("--until", help="before this time (same forms)")
    p.add_argument("--kind", choices=ENTRY_KINDS)
    p.add_argument("--limit", type=int, default=50, help="newest N entries (default: %(default)s)")
    p.set_defaults(run=cmd_history)
    p = led.add_parser("top", parents=reading, help="nodes by credits earned")
    p.add_argument("--domain")
    p.add_argument("--period", default="all", help="24h, 7d, 30d ... or all (default: %(default)s)")
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(run=cmd_top)
    p = led.add_parser("show", parents=reading, help="one inference and its entries")
    p.add_argument("request_id")
    p.set_defaults(run=cmd_show)
    p = led.add_parser("verify", parents=reading, help="check every hash and signature")
    p.set_defaults(run=cmd_verify)
    p = led.add_parser("export", parents=[parents.home], help="every entry as CSV or JSON lines")
    p.add_argument("--format", choices=("csv", "json"), required=True)
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(run=cmd_export)
    p = led.add_parser("penalize", parents=[parents.home], help="take credits back from a node")
    p.add_argument("node", help="node id or unique prefix")
    p.add_argument("amount", help="credits, e.g. 2.5")
    p.add_argument("--reason", required=True)
    p.add_argument("--ref", help="idempotency key (default: a new one); reuse it to retry safely")
    p.set_defaults(run=cmd_penalize)
    p = led.add_parser(
        "grant", parents=[parents.home], help="fund an API key from the treasury",
        description="Move credits from the treasury to an API key's account, recorded in the "
        "ledger like every transfer: the only way the treasury funds the keys that ask.",
    )  # fmt: skip
    p.add_argument("key", help="the key's name or id")
    p.add_argument("amount", help="credits, e.g. 100")
    p.add_argument("--reason", default="", help="why, for the ledger")
    p.add_argument("--ref", help="idempotency key (default: a new one); reuse it to retry safely")
    p.set_defaults(run=cmd_grant)


def open_ledger(args: argparse.Namespace, write: bool = False) -> Ledger:
    """The ledger of this hub; read commands need only the public key and a current schema."""
    from hub.ledger.keys import load_public_key, load_signing_key
    from hub.ledger.ledger import Ledger

    cfg = HubConfig.load(args.home, args.db)
    engine = current_engine(args)
    key = load_signing_key(cfg.signing_key_path) if write else None
    return Ledger(engine, key, load_public_key(cfg.public_key_path), cfg.rewards)


def _positive_limit(args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise SLMError(f"--limit must be at least 1, got {args.limit}")


def cmd_balance(args: argparse.Namespace) -> None:
    ledger = open_ledger(args)
    balances = ledger.balances()
    if args.node:
        account = _account(ledger, args.node)
        balances = {account: balances.get(account, 0)}
    if args.json:
        print_json({a: format_credits(v) for a, v in balances.items()})
        return
    table = Table("account", "balance (credits)")
    table.columns[1].justify = "right"
    for account, value in sorted(balances.items(), key=lambda kv: -kv[1]):
        table.add_row(account, format_credits(value))
    console().print(table)
    if not args.node:
        print(f"sum of all balances: {format_credits(sum(balances.values()))}")


def _account(ledger: Ledger, text: str) -> str:
    """An API key's account by its name or id, else a node's by id or prefix."""
    from hub.access.keys import KeyStore

    try:
        return KeyStore(ledger.engine).find(text.removeprefix("key:")).account
    except SLMError:
        return ledger.resolve_node(text)


def _entries_table(entries: list[Entry]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("seq", "time (UTC)", "kind", "from", "to", "credits", "ref"):
        table.add_column(name, no_wrap=True, justify="right" if name == "credits" else "left")
    table.add_column("reason")
    for e in entries:
        table.add_row(
            str(e.seq), e.created_at[5:19].replace("T", " "), e.kind.removesuffix("_reward"),
            _short(e.debit), _short(e.credit), format_credits(e.amount), e.ref[:10], e.reason,
        )  # fmt: skip
    return table


def _short(account: str) -> str:
    """node:3f9a2c11d0e4b701... -> 3f9a2c11, key:0a1b2c3d4e5f -> key:0a1b2c3d (the full
    account is in --json and export)."""
    return account.removeprefix("node:")[:8] if account.startswith("node:") else account[:12]


def cmd_history(args: argparse.Namespace) -> None:
    _positive_limit(args)
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    ledger = open_ledger(args)
    account = _account(ledger, args.node) if args.node else None
    entries = ledger.history(account, since, until, args.kind, args.limit)
    if args.json:
        print_json([asdict(e) for e in entries])
        return
    console().print(_entries_table(entries))


def cmd_top(args: argparse.Namespace) -> None:
    _positive_limit(args)
    since = None if args.period == "all" else parse_when(args.period)
    rows = open_ledger(args).top(args.domain, since, args.limit)
    if args.json:
        print_json(
            [{"account": a, "earned": format_credits(v), "inferences": n} for a, v, n in rows]
        )
        return
    title = f"top nodes, {args.period}" + (f", domain {args.domain}" if args.domain else "")
    table = Table("rank", "node", "earned (credits)", "inferences rewarded", title=title)
    for i, (account, value, count) in enumerate(rows, 1):
        table.add_row(str(i), account, format_credits(value), str(count))
    console().print(table)


def cmd_show(args: argparse.Namespace) -> None:
    record, entries = open_ledger(args).show(args.request_id)
    if args.json:
        print_json({"inference": record, "entries": [asdict(e) for e in entries]})
        return
    for key, value in record.items():
        print(f"{key:<21} {value}")
    console().print(_entries_table(entries))


def cmd_verify(args: argparse.Namespace) -> int:
    result = open_ledger(args).verify()
    if args.json:
        print_json(asdict(result))
    elif result.ok:
        print(f"ledger verified: {result.entries} entries, every hash and signature checks out")
    else:
        where = (
            f"entry {result.bad_seq} ({result.bad_entry_id})" if result.bad_entry_id else "ledger"
        )
        print(f"slm-hub: ledger verification FAILED at {where}: {result.problem}", file=sys.stderr)
    return 0 if result.ok else EXIT_ERROR


def cmd_export(args: argparse.Namespace) -> None:
    from slm.atomic import atomic_write

    if args.out is not None and args.out.is_dir():
        raise SLMError(
            f"--out {args.out} is a folder; give a file name, e.g. {args.out}/ledger.csv"
        )
    ledger = open_ledger(args)
    if args.out is None:
        for chunk in ledger.export(args.format):
            sys.stdout.write(chunk)
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            for chunk in ledger.export(args.format):
                f.write(chunk)

    atomic_write(args.out, write)
    print(f"wrote {args.out}")


def cmd_penalize(args: argparse.Namespace) -> None:
    import uuid

    micro = parse_credits(args.amount)
    ledger = open_ledger(args, write=True)
    entry = ledger.penalize(args.node, micro, args.reason, args.ref or uuid.uuid4().hex)
    print(
        f"entry {entry.seq}: {format_credits(entry.amount)} credits "
        f"from {entry.debit} to the treasury"
    )


def cmd_grant(args: argparse.Namespace) -> None:
    import uuid

    from hub.access.keys import KeyStore

    micro = parse_credits(args.amount)
    ledger = open_ledger(args, write=True)
    key = KeyStore(ledger.engine).find(args.key)
    ledger.ensure_accounts([], [key.key_id])
    reason = args.reason or f"granted to key {key.name}"
    entry = ledger.grant(key.account, micro, reason, args.ref or uuid.uuid4().hex)
    print(
        f"entry {entry.seq}: {format_credits(entry.amount)} credits from the treasury to "
        f"{key.account} ({key.name}); balance {format_credits(ledger.balance(key.account))}"
    )
