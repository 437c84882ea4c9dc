"""`slm-hub serve`: run the hub; its flags are derived from ServeOptions and RouterConfig."""

from __future__ import annotations

import argparse
import sys

from hub.cli.common import Parents
from hub.cli.home import ensure_home
from hub.config import HubConfig, ServeOptions
from hub.routing.config import RouterConfig
from slm.command import add_flags, values

DESCRIPTION = """Serve the routing plane (nodes dial in, clients ask over gRPC or the
OpenAI-compatible HTTP API on --http-port, with an API key) with TLS from the hub home,
recording every answer in the ledger, paid by the asking key. Initialises the home and
upgrades the database first if needed. Also runs the training plane: a Flower SuperLink (same
TLS, SuperNode authentication on, state in <home>/flower), restarted if it exits; every
admitted node's key is registered there. Stop with Ctrl-C: answers in flight finish first."""


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    summary = "run the hub: nodes join it, clients ask it"
    p = sub.add_parser("serve", parents=[parents.home], help=summary, description=DESCRIPTION)
    add_flags(
        p,
        ServeOptions,
        only=("host", "port", "insecure", "flower_port", "http_port", "heartbeat_s"),
    )
    add_flags(p.add_argument_group("three-model answers"), ServeOptions,
              only=("generalist_url", "generalist_model", "generalist_ca"))  # fmt: skip
    add_flags(p.add_argument_group("routing"), RouterConfig, prefix="router_")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio
    import logging

    from hub.serve import serve

    router = RouterConfig(**values(RouterConfig, args, prefix="router_"))
    options = ServeOptions(router=router, **values(ServeOptions, args))  # refuses before writing
    made, _ = ensure_home(args.home, args.db, [])
    for line in made:
        print(f"created {line}", file=sys.stderr)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = HubConfig.load(args.home, args.db)
    host, ca = options.host, args.home / "ca.pem"

    def ready(port: int, http_port: int) -> None:
        trust = "plaintext" if options.insecure else f"TLS; nodes and clients need --ca {ca}"
        print(f"hub listening on {host}:{port} ({trust})", flush=True)
        scheme = "http" if options.insecure else "https"
        print(f"OpenAI-compatible API on {scheme}://{host}:{http_port}/v1 (a key: slm-hub key "
              "create --name NAME --credits N)", flush=True)  # fmt: skip
        print(f"web pages (chat, nodes, rewards, training) on {scheme}://{host}:{http_port}/ui/",
              flush=True)  # fmt: skip
        print(
            f"add a node: slm-hub token create --domain DOMAIN, then on the node: "
            f"slm-node join --hub {host}:{port} --token TOKEN"
            + (" --insecure" if options.insecure else f" --ca {ca}"),
            file=sys.stderr, flush=True,
        )  # fmt: skip

    asyncio.run(serve(cfg, options, ready))
    print("hub stopped", file=sys.stderr)
