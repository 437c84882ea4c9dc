"""`slm-hub key create|list|revoke`: the API keys clients ask with, and `slm-hub ledger grant`
(in ledger.py) funds them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from hub.access.key_limits import KeyLimits
from hub.cli.common import Parents, console, current_engine, print_json
from hub.ledger.rewards import format_credits, parse_credits
from slm.command import add_flags, values
from slm.errors import SLMError


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("key", help="API keys for clients (who may ask, and who pays)")
    key = p.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    p = key.add_parser(
        "create", parents=[parents.home], help="a new API key, shown once",
        description="Create an API key: clients send it as `Authorization: Bearer KEY` (HTTP) "
        "or call metadata (gRPC). Its account pays for its Asks; fund it with --credits or "
        "`slm-hub ledger grant`. The key is printed once (or written to --out); only its "
        "sha256 is stored.",
    )  # fmt: skip
    p.add_argument("--name", required=True, help="who it is for, e.g. alice or ci@example.org")
    p.add_argument("--credits", help="credits granted from the treasury at once, e.g. 100")
    add_flags(p, KeyLimits)
    p.add_argument("--admin", action="store_true", help="may read every node's balance")
    p.add_argument("--out", type=Path, help="write the key to this file (mode 0600), not stdout")
    p.set_defaults(run=cmd_create)
    p = key.add_parser("list", parents=[parents.home, parents.as_json], help="every key")
    p.set_defaults(run=cmd_list)
    p = key.add_parser("revoke", parents=[parents.home], help="refuse a key from now on")
    p.add_argument("key", help="the key's name or id")
    p.set_defaults(run=cmd_revoke)


def create_key(args: argparse.Namespace, name: str, limits: KeyLimits, admin: bool,
               credits: str | None) -> tuple[str, str]:  # fmt: skip
    """(the key, its id): stored, its ledger account opened and funded."""
    from hub.access.keys import KeyStore
    from hub.cli.ledger import open_ledger

    micro = parse_credits(credits) if credits is not None else 0  # refused before writing
    ledger = open_ledger(args, write=True)
    secret, record = KeyStore(ledger.engine).create(name, limits, admin)
    ledger.ensure_accounts([], [record.key_id])
    if micro:
        ledger.grant(record.account, micro, f"granted at creation of key {name}", record.key_id)
    return secret, record.key_id


def cmd_create(args: argparse.Namespace) -> None:
    from slm.atomic import atomic_write_bytes

    limits = KeyLimits(**values(KeyLimits, args))
    if args.out is not None and args.out.exists():
        raise SLMError(f"{args.out} exists; give another --out (a key is never overwritten)")
    secret, key_id = create_key(args, args.name, limits, args.admin, args.credits)
    if args.out is not None:
        atomic_write_bytes(args.out, (secret + "\n").encode(), mode=0o600)
        print(f"wrote the key to {args.out}")
    else:
        print(secret)
    funded = f", {args.credits} credits" if args.credits else ", no credits yet"
    print(f"key {key_id} ({args.name}){funded}; it is shown only now. Use it: "
          "slm-hub ask --key-file FILE, or Authorization: Bearer KEY", file=sys.stderr)  # fmt: skip


def cmd_list(args: argparse.Namespace) -> None:
    from hub.access.keys import KeyStore
    from hub.cli.ledger import open_ledger

    ledger = open_ledger(args)
    balances = ledger.balances()
    keys = KeyStore(current_engine(args)).list()
    rows = [
        {"key_id": k.key_id, "name": k.name, "admin": k.admin, "rate_per_min": k.rate_per_min,
         "max_concurrent": k.max_concurrent, "balance": format_credits(balances.get(k.account, 0)),
         "created_at": k.created_at, "revoked_at": k.revoked_at}
        for k in keys
    ]  # fmt: skip
    if args.json:
        print_json(rows)
        return
    table = Table("key id", "name", "admin", "rate/min", "at once", "balance", "created (UTC)",
                  "state")  # fmt: skip
    for r in rows:
        table.add_row(
            r["key_id"], r["name"], "yes" if r["admin"] else "", str(r["rate_per_min"] or "-"),
            str(r["max_concurrent"] or "-"), r["balance"], r["created_at"][:19],
            f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "active",
        )  # fmt: skip
    console().print(table)


def cmd_revoke(args: argparse.Namespace) -> None:
    from hub.access.keys import KeyStore

    record = KeyStore(current_engine(args)).revoke(args.key)
    print(f"key {record.key_id} ({record.name}) revoked at {record.revoked_at}; a serving hub "
          "refuses it within a second")  # fmt: skip
