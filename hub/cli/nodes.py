"""`slm-hub node list|revoke`: the registry of every node this hub admitted, and revocation,
the operator's way to cut a node off for good."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from rich.table import Table

from hub.cli.common import Parents, console, current_engine, print_json

REVOKE_HELP = """\
The node's stream is closed within a second by the hub serving this home (the node is told
PERMISSION_DENIED and stops dialling), it is never routed to again, its key leaves the
training plane, and it cannot join again with any token. The time and reason are recorded."""


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("node", help="every node this hub admitted; revoke one")
    node = p.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    p = node.add_parser(
        "list", parents=[parents.home, parents.as_json],
        help="the registry: domain, model, last seen, reputation, revoked",
    )  # fmt: skip
    p.set_defaults(run=cmd_list)
    p = node.add_parser(
        "revoke", parents=[parents.home], help="cut a node off for good", description=REVOKE_HELP
    )
    p.add_argument("node", help="node id or unique prefix (see `slm-hub node list`)")
    p.add_argument("--reason", default="", help="recorded, and told to the node")
    p.set_defaults(run=cmd_revoke)


def cmd_list(args: argparse.Namespace) -> None:
    from hub.storage.registry import NodeRegistry

    records = NodeRegistry(current_engine(args)).all()
    if args.json:
        print_json([{k: v for k, v in asdict(r).items() if k != "public_key"} for r in records])
        return
    table = Table("node", "domain", "model", "last seen (UTC)", "reputation", "revoked")
    for r in records:
        revoked = f"{r.revoked_at[:19]} {r.revoked_reason}" if r.revoked_at else ""
        table.add_row(r.node_id[:12], r.domain, r.model_version[:16], r.last_seen[:19],
                      f"{r.reputation:.3f}", revoked)  # fmt: skip
    console().print(table)


def cmd_revoke(args: argparse.Namespace) -> None:
    from hub.storage.registry import NodeRegistry

    registry = NodeRegistry(current_engine(args))
    record = registry.revoke(registry.resolve(args.node).node_id, args.reason)
    print(record.node_id)
    print(f"revoked node {record.node_id[:12]} ({record.domain}) at {record.revoked_at}; a hub "
          "serving this home closes its stream within a second", file=sys.stderr)  # fmt: skip
