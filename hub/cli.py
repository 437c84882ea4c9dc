"""`slm-hub`: the hub's command line. Its commands land with the routing, ledger and federation
issues; until then each one says so and exits non-zero."""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "init": "create the hub key, CA and server certificate",
    "serve": "run the hub: routing plane, ledger, Flower SuperLink",
    "token": "issue join tokens for nodes",
    "nodes": "list the nodes that joined",
    "ask": "ask the network a prompt and stream the answer",
    "train": "run federated training rounds for a domain",
    "ledger": "query and verify the reward ledger",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slm-hub",
        description="Run a SwarmLLM hub: route prompts to the most confident domain node, "
        "train each domain's nodes together, reward the nodes that do the work.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        sub.add_parser(name, help=f"{summary} (not available yet)", description=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"slm-hub: error: `slm-hub {args.command}` is not available yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
