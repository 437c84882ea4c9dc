"""`slm-hub token create|list`: join tokens, how an operator lets a new node in."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from rich.table import Table

from hub.cli.common import Parents, console, current_engine, parse_span, print_json


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("token", help="join tokens for new nodes")
    tok = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tok.add_parser("create", parents=[parents.home], help="a single-use token for one domain")
    p.add_argument("--domain", required=True, help="the domain the node will serve, e.g. law")
    p.add_argument(
        "--ttl", default="24h", help="how long it stays valid: 30m, 24h, 7d (default: %(default)s)"
    )
    p.set_defaults(run=cmd_token_create)
    p = tok.add_parser(
        "list", parents=[parents.home, parents.as_json], help="tokens issued, used or not"
    )
    p.set_defaults(run=cmd_token_list)


def cmd_token_create(args: argparse.Namespace) -> None:
    from hub.routing.tokens import create_token

    token = create_token(current_engine(args), args.domain, parse_span(args.ttl))
    print(token)
    print(
        f"single use, domain {args.domain}, valid {args.ttl}; on the node: "
        f"slm-node join --hub HOST:PORT --token {token} --ca {args.home / 'ca.pem'}",
        file=sys.stderr,
    )


def cmd_token_list(args: argparse.Namespace) -> None:
    from hub.routing.tokens import list_tokens

    tokens = list_tokens(current_engine(args))
    if args.json:
        print_json([asdict(t) for t in tokens])
        return
    table = Table("token sha256", "domain", "created (UTC)", "expires (UTC)", "used by")
    for t in tokens:
        table.add_row(
            t.token_sha256[:16], t.domain, t.created_at[:19], t.expires_at[:19], t.used_by or ""
        )
    console().print(table)
