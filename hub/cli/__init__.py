"""`slm-hub`: a thin shell over hub/, one small module per group of commands; every error is one
line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys

from hub.cli import client, home, keys, ledger, nodes, serve, tokens, train
from hub.cli.common import Parents
from protos.errors import WireError
from slm.command import parser_with_commands, run
from slm.errors import SLMError

DESCRIPTION = """Run a SwarmLLM hub: route prompts to the most confident domain node, train each
domain's nodes together, reward the nodes that do the work."""
EPILOG = """\
examples:
  slm-hub init --host hub.example.org
  slm-hub serve --host 0.0.0.0
  slm-hub token create --domain medicine --ttl 24h
  slm-hub key create --name alice --credits 100 --rate 60
  slm-hub ledger grant alice 50
  slm-hub nodes
  slm-hub node revoke 3f9a2c --reason "answers spam"
  slm-hub ask "Acute serous otitis media" --max-tokens 40
  slm-hub train --domain law --rounds 3 --min-nodes 2
  slm-hub ledger balance
  slm-hub ledger history --node 3f9a2c --since 7d
  slm-hub ledger top --period 24h
  slm-hub ledger verify
  slm-hub ledger export --format csv --out ledger.csv
"""


def main(argv: list[str] | None = None) -> int:
    return run("slm-hub", build_parser(), argv, (SLMError, WireError))


def build_parser() -> argparse.ArgumentParser:
    parser, sub = parser_with_commands("slm-hub", DESCRIPTION, EPILOG)
    parents = Parents.build()
    for group in (home, serve, client, keys, tokens, nodes, train, ledger):
        group.register(sub, parents)
    return parser


if __name__ == "__main__":
    sys.exit(main())
