"""`slm-hub`: a thin shell over hub/; every error is one line and a non-zero exit.

Commands of planes that have not landed yet (train) say so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from slm.errors import SLMError

EXIT_ERROR = 1
DEFAULT_ADDRESS = "127.0.0.1:7443"
LOSSES = ("train_loss", "val_loss")
KINDS = ("inference_reward", "training_reward", "penalty")
EPILOG = """\
examples:
  slm-hub init --host hub.example.org
  slm-hub serve --host 0.0.0.0
  slm-hub token create --domain medicine --ttl 24h
  slm-hub nodes
  slm-hub ask "Acute serous otitis media" --max-tokens 40
  slm-hub train --domain law --rounds 3 --min-nodes 2
  slm-hub ledger balance
  slm-hub ledger history --node 3f9a2c --since 7d
  slm-hub ledger top --period 24h
  slm-hub ledger verify
  slm-hub ledger export --format csv --out ledger.csv
"""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SLMError as exc:
        print(f"slm-hub: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # files and pipes: a missing folder, a full disk, a closed pager
        if not isinstance(exc, BrokenPipeError):
            print(f"slm-hub: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("slm-hub: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from hub.aggregation import STRATEGIES
    from hub.home import DEFAULT_HOME

    parser = argparse.ArgumentParser(
        prog="slm-hub",
        description="Run a SwarmLLM hub: route prompts to the most confident domain node, "
        "train each domain's nodes together, reward the nodes that do the work.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home", type=Path, default=DEFAULT_HOME,
        help="hub home: keys, hub.toml, hub.db (default: $SLM_HUB_HOME or %(default)s)",
    )  # fmt: skip
    common.add_argument("--db", help="database URL (default: hub.toml's, else <home>/hub.db)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser(
        "init", parents=[common], help="create the hub home: keys, TLS certificates, database",
        description="Create what is missing in the hub home: the ledger signing key, a CA and a "
        "server certificate (for localhost, 127.0.0.1 and every --host), hub.toml, and the "
        "database at the current schema. Run again with --host to reissue the server "
        "certificate for more names; the CA, and so the nodes' trust, stays.",
    )  # fmt: skip
    p.add_argument("--host", action="append", default=[], help="name or address (repeatable)")
    p.set_defaults(run=cmd_init)

    p = sub.add_parser(
        "serve", parents=[common], help="run the hub: nodes join it, clients ask it",
        description="Serve the routing plane (nodes dial in, clients ask) with TLS from the hub "
        "home, recording every answer in the ledger. Initialises the home and upgrades the "
        "database first if needed. Also runs the training plane: a Flower SuperLink (same TLS, "
        "SuperNode authentication on, state in <home>/flower), restarted if it exits; every "
        "admitted node's key is registered there. Stop with Ctrl-C: answers in flight finish "
        "first.",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on; 0.0.0.0 to serve other machines (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--port", type=int, default=7443, help="(default: %(default)s; 0: any free)")
    p.add_argument(
        "--insecure", action="store_true", help="plaintext instead of TLS; loopback hosts only"
    )
    p.add_argument(
        "--flower-port", type=int, default=7444,
        help="port of the training plane's Flower SuperLink, which serve runs and supervises "
        "(default: %(default)s; 0: any free)",
    )  # fmt: skip
    p.add_argument("--candidates", type=int, default=8, help="nodes scored per prompt (top-M)")
    p.add_argument(
        "--score-deadline", type=float, default=2.0,
        help="seconds a node has to score a prompt before it is skipped (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-prompt-bytes", type=int, default=16_384, help="larger prompts are refused"
    )
    p.set_defaults(run=cmd_serve)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--hub", default=DEFAULT_ADDRESS, help="the hub's HOST:PORT (default: %(default)s)"
    )
    client.add_argument("--ca", type=Path, help="the hub's CA certificate (default: <home>/ca.pem)")
    client.add_argument("--insecure", action="store_true", help="plaintext (a loopback hub)")
    client.add_argument(
        "--home", type=Path, default=DEFAULT_HOME, help="hub home, for the default --ca"
    )

    p = sub.add_parser("nodes", parents=[client, as_json], help="the nodes that joined (a table)")
    p.set_defaults(run=cmd_nodes)

    p = sub.add_parser(
        "ask", parents=[client, as_json], help="ask the network; streams the answer",
        description="Send a prompt to the hub, stream the answer as it comes, then show which "
        "node answered and why (the candidates, their logliks and posteriors).",
    )  # fmt: skip
    p.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    p.add_argument("--max-tokens", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 for no cut")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="sampling seed, for repeatable output")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("token", help="join tokens for new nodes")
    tok = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tok.add_parser("create", parents=[common], help="a single-use token for one domain")
    p.add_argument("--domain", required=True, help="the domain the node will serve, e.g. law")
    p.add_argument(
        "--ttl", default="24h", help="how long it stays valid: 30m, 24h, 7d (default: %(default)s)"
    )
    p.set_defaults(run=cmd_token_create)
    p = tok.add_parser("list", parents=[common, as_json], help="tokens issued, used or not")
    p.set_defaults(run=cmd_token_list)

    p = sub.add_parser("db", help="database schema")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("upgrade", parents=[common], help="apply pending schema migrations")
    p.set_defaults(run=cmd_db_upgrade)

    p = sub.add_parser("ledger", help="query and verify the reward ledger")
    led = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    p = led.add_parser("balance", parents=[common, as_json], help="balances of nodes")
    p.add_argument("node", nargs="?", help="node id or unique prefix (default: every account)")
    p.set_defaults(run=cmd_balance)
    p = led.add_parser("history", parents=[common, as_json], help="ledger entries, oldest first")
    p.add_argument("--node", help="only entries of this node")
    p.add_argument("--since", help="from this time: 2026-11-01, 2026-11-01T12:00, or 24h / 7d ago")
    p.add_argument("--until", help="before this time (same forms)")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--limit", type=int, default=50, help="newest N entries (default: %(default)s)")
    p.set_defaults(run=cmd_history)
    p = led.add_parser("top", parents=[common, as_json], help="nodes by credits earned")
    p.add_argument("--domain")
    p.add_argument("--period", default="all", help="24h, 7d, 30d ... or all (default: %(default)s)")
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(run=cmd_top)
    p = led.add_parser("show", parents=[common, as_json], help="one inference and its entries")
    p.add_argument("request_id")
    p.set_defaults(run=cmd_show)
    p = led.add_parser("verify", parents=[common, as_json], help="check every hash and signature")
    p.set_defaults(run=cmd_verify)
    p = led.add_parser("export", parents=[common], help="every entry as CSV or JSON lines")
    p.add_argument("--format", choices=("csv", "json"), required=True)
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(run=cmd_export)
    p = led.add_parser("penalize", parents=[common], help="take credits back from a node")
    p.add_argument("node", help="node id or unique prefix")
    p.add_argument("amount", help="credits, e.g. 2.5")
    p.add_argument("--reason", required=True)
    p.add_argument("--ref", help="idempotency key (default: a new one); reuse it to retry safely")
    p.set_defaults(run=cmd_penalize)

    p = sub.add_parser(
        "train", parents=[common], help="run federated training rounds for one domain",
        description="Train a domain's connected nodes together on Flower: each round sends the "
        "domain's global model to its nodes, each trains --local-steps steps on its own data "
        "(which never leaves it) and sends weights back; updates with NaN/Inf, wrong shapes or "
        "outlying norms are rejected, the rest aggregated, stored in <home>/models/<domain>/, "
        "adopted by the nodes and credited in the ledger. Runs beside `slm-hub serve`, on the "
        "hub's machine.",
    )  # fmt: skip
    p.add_argument("--domain", required=True, help="the domain whose nodes train (only those)")
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default: %(default)s)")
    p.add_argument("--local-steps", type=int, default=20,
                   help="training steps per node per round (default: %(default)s)")  # fmt: skip
    p.add_argument("--strategy", default="fedavg", choices=STRATEGIES,
                   help="aggregation (default: %(default)s, weighted by examples)")  # fmt: skip
    p.add_argument("--min-nodes", type=int, default=2,
                   help="nodes that must be connected, and updates a round needs to complete "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a round waits for updates before going on without the "
                   "missing nodes (default: %(default)s)")  # fmt: skip
    p.add_argument("--reward", choices=("equal", "by-examples"), default="equal",
                   help="how a round's reward is split (default: %(default)s)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="progress as JSON lines")
    p.set_defaults(run=cmd_train)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from hub.federation import TrainingPlan
    from hub.superlink import running_control_client, served_db_url
    from hub.training_runs import follow, start

    running_control_client(args.home).close()  # a one-line error when no hub serves from there
    args.db = args.db or served_db_url(args.home)  # the registry the serving hub writes
    plan = TrainingPlan(
        domain=args.domain, rounds=args.rounds, local_steps=args.local_steps,
        strategy=args.strategy, min_nodes=args.min_nodes, round_timeout=args.timeout,
        reward_by_examples=args.reward == "by-examples",
    )  # fmt: skip
    client, run_id, plan = start(args.home, lambda: _current_engine(args), plan)
    nodes = len(plan.members)
    if not args.json:
        print(f"run {run_id}: {plan.rounds} {plan.strategy} round(s) of {plan.local_steps} local "
              f"steps on {nodes} {plan.domain} node(s)", file=sys.stderr)  # fmt: skip
    show = (lambda e: print(json.dumps(e), flush=True)) if args.json else _show_training_event
    try:
        outcome = follow(client, args.home, run_id, show)
    finally:
        client.close()
    if not outcome.ok:
        raise SLMError(f"run {run_id} failed: {outcome.reason}")
    if not args.json:
        print(f"run {run_id}: done; `slm-hub nodes` shows the versions the nodes serve",
              file=sys.stderr)  # fmt: skip
    return 0


def _show_training_event(event: dict) -> None:
    kind = event["event"]
    if kind == "initial":
        print(f"starting from {event['source']}", file=sys.stderr)
    elif kind == "round-started":
        print(f"round {event['round']}: training on {len(event['nodes'])} node(s) ...",
              file=sys.stderr, flush=True)  # fmt: skip
    elif kind == "round-done":
        loss = {k: "-" if event[k] is None else f"{event[k]:.4f}" for k in LOSSES}
        print(f"round {event['round']}: {len(event['participants'])} participant(s), "
              f"{len(event['rejected'])} rejected, train loss {loss['train_loss']}, "
              f"validation loss {loss['val_loss']}, global {event['weights_sha256'][:16]}",
              file=sys.stderr, flush=True)  # fmt: skip
        for r in event["rejected"]:
            print(f"  rejected {r['node'][:12]}: {r['reason']}", file=sys.stderr)
    elif kind == "round-failed":
        for r in event["rejected"]:
            print(f"  rejected {r['node'][:12]}: {r['reason']}", file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> None:
    made, head = ensure_home(args.home, args.db, args.host)
    print("\n".join(made) if made else f"hub home {args.home} already initialised")
    print(f"database    schema {head}")


def ensure_home(home: Path, db: str | None, hosts: list[str]) -> tuple[list[str], str]:
    """Create what is missing in the hub home; (what was made, the database's schema)."""
    from hub.db import make_engine, upgrade
    from hub.home import HubConfig
    from hub.keys import create_signing_key, load_signing_key, write_public_key
    from hub.tls import TLSFiles, certificate_hosts, create_tls

    cfg = HubConfig.load(home, db)
    home.mkdir(parents=True, exist_ok=True)
    made = []
    if not cfg.signing_key_path.exists():
        create_signing_key(cfg.signing_key_path)
        made.append(f"signing key {cfg.signing_key_path} (Ed25519; signs every ledger entry)")
    elif not cfg.public_key_path.exists():  # an init interrupted between the two files
        write_public_key(cfg.signing_key_path, load_signing_key(cfg.signing_key_path))
    tls = TLSFiles(home)
    if hosts or not tls.server_cert.exists():
        known = certificate_hosts(tls.server_cert) if tls.server_cert.exists() else []
        create_tls(tls, [*known, *hosts])
        made.append(
            f"certificate {tls.server_cert} for {', '.join(certificate_hosts(tls.server_cert))}"
        )
        made.append(f"CA          {tls.ca_cert} (give it to nodes: slm-node join --ca)")
    if not cfg.settings_path.exists():
        cfg.save()
        made.append(f"settings    {cfg.settings_path}")
    return made, upgrade(make_engine(cfg.db_url))


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio
    import logging

    from hub.home import HubConfig
    from hub.router import RouterConfig
    from hub.server import ServeOptions, check_listen, serve
    from hub.superlink import SuperLinkOptions

    if args.candidates < 1:
        raise SLMError(f"--candidates must be at least 1, got {args.candidates}")
    if args.score_deadline <= 0 or args.max_prompt_bytes < 1:
        raise SLMError("--score-deadline and --max-prompt-bytes must be positive")
    router = RouterConfig(
        max_prompt_bytes=args.max_prompt_bytes, candidates=args.candidates,
        score_deadline_s=args.score_deadline,
    )  # fmt: skip
    flower = SuperLinkOptions(host=args.host, port=args.flower_port, insecure=args.insecure)
    options = ServeOptions(
        host=args.host, port=args.port, insecure=args.insecure, router=router, flower=flower
    )
    check_listen(options)
    made, _ = ensure_home(args.home, args.db, [])
    for line in made:
        print(f"created {line}", file=sys.stderr)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = HubConfig.load(args.home, args.db)

    def ready(port: int) -> None:
        ca = args.home / "ca.pem"
        trust = "plaintext" if args.insecure else f"TLS; nodes and clients need --ca {ca}"
        print(f"hub listening on {args.host}:{port} ({trust})", flush=True)
        print(
            f"add a node: slm-hub token create --domain DOMAIN, then on the node: "
            f"slm-node join --hub {args.host}:{port} --token TOKEN"
            + (" --insecure" if args.insecure else f" --ca {args.home / 'ca.pem'}"),
            file=sys.stderr, flush=True,
        )  # fmt: skip

    asyncio.run(serve(cfg, options, ready))
    print("hub stopped", file=sys.stderr)


def _swarm(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from protos import swarm_pb2_grpc as rpc
    from protos.channel import channel

    ca = None if args.insecure else (args.ca or args.home / "ca.pem")
    return rpc.SwarmStub(channel(args.hub, ca, args.insecure))


def _rpc_error(args: argparse.Namespace, exc) -> SLMError:  # type: ignore[no-untyped-def]
    """One line for a failed call: the hub's own reason, or why it could not be reached."""
    import grpc

    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "refused" in details or "ssl" in details.lower()
    ):
        return SLMError(f"cannot reach the hub at {args.hub}: {details.splitlines()[0]}")
    return SLMError(f"{exc.code().name}: {details}")


def cmd_nodes(args: argparse.Namespace) -> None:
    import grpc

    from protos import swarm_pb2 as pb

    try:
        reply = _swarm(args).ListNodes(pb.ListNodesRequest(), timeout=10)
    except grpc.RpcError as exc:
        raise _rpc_error(args, exc) from None
    if args.json:
        from google.protobuf.json_format import MessageToDict

        _print_json([
            MessageToDict(n, always_print_fields_with_no_presence=True,
                          preserving_proto_field_name=True)
            for n in reply.nodes
        ])  # fmt: skip
        return
    table = Table("node", "domain", "model", "state", "last seen (UTC)", "capacity", "busy",
                  "reputation", title=f"nodes of {args.hub}")  # fmt: skip
    for n in reply.nodes:
        table.add_row(
            n.node_id[:16], n.domain, n.model_version,
            "[green]connected[/]" if n.connected else "offline", n.last_seen[:19].replace("T", " "),
            str(n.capacity), str(n.in_flight), f"{n.reputation:.2f}",
        )  # fmt: skip
    _console().print(table)
    online = sum(n.connected for n in reply.nodes)
    print(f"{len(reply.nodes)} nodes known, {online} connected")


def cmd_ask(args: argparse.Namespace) -> None:
    import grpc

    from protos import swarm_pb2 as pb

    try:
        prompt = sys.stdin.buffer.read().decode("utf-8") if args.prompt == "-" else args.prompt
        prompt.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise SLMError("the prompt is not valid UTF-8") from None
    request = pb.AskRequest(
        prompt=prompt, max_tokens=args.max_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, stop=args.stop,
    )  # fmt: skip
    if args.max_tokens < 1:  # 0 would mean "the hub's default" on the wire
        raise SLMError(f"--max-tokens must be between 1 and 4096, got {args.max_tokens}")
    if args.seed is not None:
        if not 0 <= args.seed < 2**63:
            raise SLMError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
        request.seed = args.seed
    answer, switches, result = [], [], None
    try:
        for reply in _swarm(args).Ask(request, timeout=600):
            kind = reply.WhichOneof("body")
            if kind == "text":
                answer.append(reply.text)
                if not args.json:
                    sys.stdout.write(reply.text)
                    sys.stdout.flush()
            elif kind == "switched":
                switches.append(reply.switched)
                if not args.json:
                    s = reply.switched
                    print(
                        f"\n[node {s.from_node[:12]} {s.reason}; node {s.to_node[:12]} continues]",
                        file=sys.stderr,
                    )
            elif kind == "result":
                result = reply.result
    except grpc.RpcError as exc:
        if answer and not args.json:
            print()
        raise _rpc_error(args, exc) from None
    if result is None:
        raise SLMError("the hub ended the answer without a result")
    if args.json:
        from google.protobuf.json_format import MessageToDict

        _print_json({
            "answer": "".join(answer),
            **MessageToDict(result, preserving_proto_field_name=True,
                            always_print_fields_with_no_presence=True),
            "switches": [MessageToDict(s, preserving_proto_field_name=True) for s in switches],
        })  # fmt: skip
        return
    print()
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 132)
    err.print(
        f"answered by [bold]{result.node_id[:16]}[/] ({result.domain}), posterior "
        f"{result.confidence:.3f}, {result.tokens} tokens in {result.latency_ms:.0f} ms "
        f"(hub overhead {result.hub_overhead_ms:.1f} ms)", highlight=False,
    )  # fmt: skip
    table = Table("node", "domain", "profile cosine", "loglik (nats)", "posterior", "")
    for c in result.candidates:
        table.add_row(c.node_id[:16], c.domain, f"{c.profile_similarity:.3f}", f"{c.loglik:.1f}",
                      f"{c.posterior:.3f}", "declined" if c.declined else "")  # fmt: skip
    err.print(table)


def parse_span(text: str) -> timedelta:
    """'30m', '24h', '7d', '2w' -> a timedelta."""
    span = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not span:
        raise SLMError(f"malformed duration {text!r}; use 30m, 24h, 7d or 2w")
    unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[span.group(2)]
    try:
        return timedelta(**{unit: int(span.group(1))})
    except OverflowError:
        raise SLMError(f"duration {text!r} is too long") from None


def cmd_token_create(args: argparse.Namespace) -> None:
    from hub.tokens import create_token

    ttl = parse_span(args.ttl)
    token = create_token(_current_engine(args), args.domain, ttl)
    print(token)
    print(
        f"single use, domain {args.domain}, valid {args.ttl}; on the node: "
        f"slm-node join --hub HOST:PORT --token {token} --ca {args.home / 'ca.pem'}",
        file=sys.stderr,
    )


def cmd_token_list(args: argparse.Namespace) -> None:
    from hub.tokens import list_tokens

    tokens = list_tokens(_current_engine(args))
    if args.json:
        _print_json([asdict(t) for t in tokens])
        return
    table = Table("token sha256", "domain", "created (UTC)", "expires (UTC)", "used by")
    for t in tokens:
        table.add_row(
            t.token_sha256[:16], t.domain, t.created_at[:19], t.expires_at[:19], t.used_by or ""
        )
    _console().print(table)


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from hub.db import make_engine, schema_state, upgrade
    from hub.home import HubConfig

    cfg = HubConfig.load(args.home, args.db)
    engine = make_engine(cfg.db_url)
    before, _ = schema_state(engine)
    head = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    print(
        f"{where}: schema {before or 'none'} -> {head}"
        if before != head
        else f"{where}: schema {head}, up to date"
    )


def _current_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """This hub's database, refused unless it is at exactly this code's schema."""
    from hub.db import check_current, make_engine
    from hub.home import HubConfig

    engine = make_engine(HubConfig.load(args.home, args.db).db_url)
    check_current(engine)
    return engine


def open_ledger(args: argparse.Namespace, write: bool = False):  # type: ignore[no-untyped-def]
    """The ledger of this hub; read commands need only the public key and a current schema."""
    from hub.home import HubConfig
    from hub.keys import load_public_key, load_signing_key
    from hub.ledger import Ledger

    cfg = HubConfig.load(args.home, args.db)
    engine = _current_engine(args)
    key = load_signing_key(cfg.signing_key_path) if write else None
    return Ledger(engine, key, load_public_key(cfg.public_key_path), cfg.rewards)


def parse_when(text: str, now: datetime | None = None) -> str:
    """An absolute date/time or a span back from now ('24h', '7d', '30m') -> ISO UTC."""
    now = now or datetime.now(UTC)
    try:
        if re.fullmatch(r"\d+[mhdw]", text.strip()):
            when = now - parse_span(text)
        else:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError, SLMError):
        raise SLMError(
            f"malformed date {text!r}; use 2026-11-01, 2026-11-01T12:00, or 24h / 7d"
        ) from None
    # isoformat pads the year to four digits, so the text sorts like the ledger's timestamps
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _console() -> Console:
    """Tables at the terminal's width, or 132 columns when piped to a file or a pager."""
    return Console(width=None if sys.stdout.isatty() else 132)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_balance(args: argparse.Namespace) -> None:
    from hub.ledger import format_credits

    ledger = open_ledger(args)
    balances = ledger.balances()
    if args.node:
        account = ledger.resolve_node(args.node)
        balances = {account: balances.get(account, 0)}
    if args.json:
        _print_json({a: format_credits(v) for a, v in balances.items()})
        return
    table = Table("account", "balance (credits)")
    table.columns[1].justify = "right"
    for account, value in sorted(balances.items(), key=lambda kv: -kv[1]):
        table.add_row(account, format_credits(value))
    _console().print(table)
    if not args.node:
        print(f"sum of all balances: {format_credits(sum(balances.values()))}")


def _entries_table(entries) -> Table:  # type: ignore[no-untyped-def]
    from hub.ledger import format_credits

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
    """node:3f9a2c11d0e4b701... -> 3f9a2c11 (the full id is in --json and export)."""
    return account.removeprefix("node:")[:8]


def cmd_history(args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise SLMError(f"--limit must be at least 1, got {args.limit}")
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    ledger = open_ledger(args)
    account = ledger.resolve_node(args.node) if args.node else None
    entries = ledger.history(account, since, until, args.kind, args.limit)
    if args.json:
        _print_json([asdict(e) for e in entries])
        return
    _console().print(_entries_table(entries))


def cmd_top(args: argparse.Namespace) -> None:
    from hub.ledger import format_credits

    if args.limit < 1:
        raise SLMError(f"--limit must be at least 1, got {args.limit}")
    since = None if args.period == "all" else parse_when(args.period)
    ledger = open_ledger(args)
    rows = ledger.top(args.domain, since, args.limit)
    if args.json:
        _print_json(
            [{"account": a, "earned": format_credits(v), "inferences": n} for a, v, n in rows]
        )
        return
    title = f"top nodes, {args.period}" + (f", domain {args.domain}" if args.domain else "")
    table = Table("rank", "node", "earned (credits)", "inferences rewarded", title=title)
    for i, (account, value, count) in enumerate(rows, 1):
        table.add_row(str(i), account, format_credits(value), str(count))
    _console().print(table)


def cmd_show(args: argparse.Namespace) -> None:
    record, entries = open_ledger(args).show(args.request_id)
    if args.json:
        _print_json({"inference": record, "entries": [asdict(e) for e in entries]})
        return
    for key, value in record.items():
        print(f"{key:<21} {value}")
    _console().print(_entries_table(entries))


def cmd_verify(args: argparse.Namespace) -> int:
    result = open_ledger(args).verify()
    if args.json:
        _print_json(asdict(result))
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

    from hub.ledger import format_credits, parse_credits

    micro = parse_credits(args.amount)
    ledger = open_ledger(args, write=True)
    entry = ledger.penalize(args.node, micro, args.reason, args.ref or uuid.uuid4().hex)
    print(
        f"entry {entry.seq}: {format_credits(entry.amount)} credits "
        f"from {entry.debit} to the treasury"
    )


if __name__ == "__main__":
    sys.exit(main())
