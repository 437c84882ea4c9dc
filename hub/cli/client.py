"""`slm-hub nodes` and `slm-hub ask`: a client of the hub's Swarm service."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from hub.cli.common import Parents, console, print_json
from hub.config import DEFAULT_HOME, ServeOptions
from protos.wire import SamplingParams
from slm.command import add_flags, values
from slm.errors import SLMError

KEY_ENV = "SLM_HUB_API_KEY"

if TYPE_CHECKING:  # gRPC is imported where a command calls the hub, not to build the parser
    import grpc

    from protos import swarm_pb2 as pb
    from protos import swarm_pb2_grpc as rpc


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--hub", default=ServeOptions().address, help="the hub's HOST:PORT (default: %(default)s)"
    )
    client.add_argument("--ca", type=Path, help="the hub's CA certificate (default: <home>/ca.pem)")
    client.add_argument("--insecure", action="store_true", help="plaintext (a loopback hub)")
    client.add_argument(
        "--home", type=Path, default=DEFAULT_HOME,
        help="hub home, for the default --ca and key (<home>/ca.pem, <home>/api_key)",
    )  # fmt: skip
    client.add_argument(
        "--key-file", type=Path,
        help=f"a file holding the API key (default: ${KEY_ENV}, else <home>/api_key)",
    )  # fmt: skip

    p = sub.add_parser(
        "nodes", parents=[client, parents.as_json], help="the nodes that joined (a table)"
    )
    p.set_defaults(run=cmd_nodes)

    p = sub.add_parser(
        "ask", parents=[client, parents.as_json], help="ask the network; streams the answer",
        description="Send a prompt to the hub, stream the answer as it comes, then show which "
        "node answered and why (the candidates, their logliks and posteriors).",
    )  # fmt: skip
    p.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    p.add_argument("--domain", default="", help="route among this domain's nodes only")
    p.add_argument(
        "--mode", choices=("direct", "refine"),
        help="direct: the most confident node answers; refine: a generalist drafts and the "
        "most confident domain node refines the draft (default: the hub's)",
    )  # fmt: skip
    p.add_argument(
        "--draft-file", type=Path, metavar="FILE",
        help="your own draft answer (a larger model's, say), to be refined: implies refine",
    )  # fmt: skip
    add_flags(p.add_argument_group("sampling"), SamplingParams)
    p.set_defaults(run=cmd_ask)


def api_key(args: argparse.Namespace) -> str:
    """The API key: --key-file, else $SLM_HUB_API_KEY, else the hub home's admin key. Never a
    flag's value: argv shows in `ps` to every user of the machine."""
    path = args.key_file
    if path is None:
        if os.environ.get(KEY_ENV, "").strip():
            return os.environ[KEY_ENV].strip()
        path = args.home / "api_key"
        if not path.exists():
            raise SLMError(f"no API key: give --key-file FILE or set ${KEY_ENV} (the hub's "
                           "operator makes one with `slm-hub key create`)")  # fmt: skip
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SLMError(f"cannot read the API key from {path}: {exc}") from None


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {api_key(args)}")]


def _swarm(args: argparse.Namespace) -> rpc.SwarmStub:
    from protos import swarm_pb2_grpc as rpc
    from protos.channel import channel

    ca = None if args.insecure else (args.ca or args.home / "ca.pem")
    return rpc.SwarmStub(channel(args.hub, ca, args.insecure))


def _rpc_error(args: argparse.Namespace, exc: grpc.RpcError) -> SLMError:
    """One line for a failed call: the hub's own reason, or why it could not be reached."""
    import grpc

    details = exc.details() or ""  # type: ignore[attr-defined]
    if exc.code() == grpc.StatusCode.UNAVAILABLE and (  # type: ignore[attr-defined]
        "failed to connect" in details or "refused" in details or "ssl" in details.lower()
    ):
        return SLMError(f"cannot reach the hub at {args.hub}: {details.splitlines()[0]}")
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
        return SLMError(
            f"the hub at {args.hub} does not speak this client's protocol (swarmllm.v2); "
            "upgrade the older of the two"
        )
    return SLMError(f"{exc.code().name}: {details}")  # type: ignore[attr-defined]


def _as_dict(message: Any, **options: bool) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True, **options)


def cmd_nodes(args: argparse.Namespace) -> None:
    import grpc

    from protos import swarm_pb2 as pb

    try:
        reply = _swarm(args).ListNodes(pb.ListNodesRequest(), timeout=10, metadata=_metadata(args))
    except grpc.RpcError as exc:
        raise _rpc_error(args, exc) from None
    if args.json:
        print_json([_as_dict(n, always_print_fields_with_no_presence=True) for n in reply.nodes])
        return
    table = Table("node", "domain", "role", "model", "state", "last seen (UTC)", "capacity",
                  "busy", "reputation", title=f"nodes of {args.hub}")  # fmt: skip
    for n in reply.nodes:
        role = n.role + (", refines" if n.refines else "")
        table.add_row(
            n.node_id[:16], n.domain, role, n.model_version,
            "[green]connected[/]" if n.connected else "offline", n.last_seen[:19].replace("T", " "),
            str(n.capacity), str(n.in_flight), f"{n.reputation:.2f}",
        )  # fmt: skip
    console().print(table)
    online = sum(n.connected for n in reply.nodes)
    print(f"{len(reply.nodes)} nodes known, {online} connected")


def _prompt(text: str) -> str:
    try:
        prompt = sys.stdin.buffer.read().decode("utf-8") if text == "-" else text
        prompt.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise SLMError("the prompt is not valid UTF-8") from None
    return prompt


def _draft(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SLMError(f"cannot read the draft {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SLMError(f"the draft {path} is not valid UTF-8") from None


def cmd_ask(args: argparse.Namespace) -> None:
    import grpc

    from protos import swarm_pb2 as pb

    params = SamplingParams(**values(SamplingParams, args))
    mode = {"direct": pb.MODE_DIRECT, "refine": pb.MODE_REFINE}.get(args.mode, pb.MODE_DEFAULT)
    request = pb.AskRequest(
        prompt=_prompt(args.prompt), sampling=params.to_proto(), domain=args.domain, mode=mode,
        draft=_draft(args.draft_file) if args.draft_file else "",
    )  # fmt: skip
    answer, switches, result, drafted = [], [], None, None
    metadata = _metadata(args)
    try:
        for reply in _swarm(args).Ask(request, timeout=600, metadata=metadata):
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
            elif kind == "drafted":
                drafted = reply.drafted
                if not args.json:
                    print(f"[draft by {drafted.by[:24]}, {drafted.tokens} tokens; refining]",
                          file=sys.stderr, flush=True)  # fmt: skip
            elif kind == "result":
                result = reply.result
    except grpc.RpcError as exc:
        if answer and not args.json:
            print()
        raise _rpc_error(args, exc) from None
    if result is None:
        raise SLMError("the hub ended the answer without a result")
    if args.json:
        print_json({
            "answer": "".join(answer),
            **_as_dict(result, always_print_fields_with_no_presence=True),
            "switches": [_as_dict(s) for s in switches],
            **({"draft": drafted.text} if drafted is not None else {}),
        })  # fmt: skip
        return
    print()
    _explain(result)


def _explain(result: pb.AskResult) -> None:
    """Who answered and why, on stderr (the answer alone is on stdout)."""
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 132)
    who = (f"drafted by [bold]{result.drafted_by[:24]}[/] ({result.draft_tokens} tokens), "
           f"refined by" if result.drafted_by else "answered by")  # fmt: skip
    err.print(
        f"{who} [bold]{result.node_id[:16]}[/] ({result.domain}), posterior "
        f"{result.confidence:.3f}, {result.tokens} tokens in {result.latency_ms:.0f} ms "
        f"(hub overhead {result.hub_overhead_ms:.1f} ms), charged "
        f"{result.charged_micro_credits / 1e6:.6f} credits", highlight=False,
    )  # fmt: skip
    table = Table("node", "domain", "profile cosine", "loglik (nats)", "posterior", "")
    for c in result.candidates:
        table.add_row(c.node_id[:16], c.domain, f"{c.profile_similarity:.3f}", f"{c.loglik:.1f}",
                      f"{c.posterior:.3f}", "declined" if c.declined else "")  # fmt: skip
    err.print(table)
