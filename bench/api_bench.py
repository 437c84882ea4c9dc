"""Benchmark the public face: the hub's CPU per Ask over gRPC and over streamed HTTP, and the floor.

Why: every Ask a client makes passes through the hub's one process (authentication, the gate's
limits, routing, relaying the nodes' text, the ledger), over gRPC or over the OpenAI-compatible
HTTP API (FastAPI on uvicorn, on the hub's event loop). This measures what an Ask costs that
process, in CPU, at 1 and 16 concurrent clients, so a regression in either transport shows, and
so the HTTP path can be compared with the least any Python streaming server costs.

The floor (the peer, measured in the same run): a bare FastAPI app on uvicorn in a process of
its own, on the same TLS certificate, whose POST /v1/completions validates the body and streams
back the same server-sent events the hub streamed for the same request (recorded from the hub
before the floor starts: the first chunk, the text chunks, the final chunk, `data: [DONE]`),
serialised per request as the hub does, with no routing, no keys, no ledger and no nodes. The
hub's HTTP CPU over the floor's is what SwarmLLM adds to any Python HTTP streaming server.

A real `slm-hub serve` (TLS) and 2 `slm-node join` processes of an slm-tiny model; the clients
are threads of this process, each with its own connection (gRPC channel or httpx client), and
ask greedy 8-token answers. CPU is each server process's own user + system time over a phase
divided by the Asks it served; every phase is repeated (the transports in turn) and the median
reported, with the spread.

    .venv/bin/python bench/api_bench.py [--reps N] [--quick] [--out PATH] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY, TITLE = "api", "The public face: CPU per Ask, gRPC and HTTP"
MODEL = "swarm/auto"
FLOOR_READY = "floor listening on 127.0.0.1:"


class Completion(BaseModel):
    """The floor's request body: what the benchmark sends, validated as any FastAPI app does."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False


def serve_floor(events: Path, certfile: str, keyfile: str) -> None:
    """The floor's process: a bare FastAPI streaming endpoint (imports no grpc, torch or hub
    code, as any small Python HTTP server). Prints where it listens once it does."""
    chunks: list[dict[str, Any]] = json.loads(events.read_text())
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.post("/v1/completions")
    async def completions(body: Completion) -> StreamingResponse:
        ids = {"id": "cmpl-" + uuid.uuid4().hex, "created": int(time.time())}

        async def stream() -> Any:
            for chunk in chunks:
                data = json.dumps({**chunk, **ids}, separators=(",", ":")).encode()
                yield b"data: " + data + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})  # fmt: skip

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                            lifespan="off", ssl_certfile=certfile, ssl_keyfile=keyfile)  # fmt: skip
    server = uvicorn.Server(config)

    async def run() -> None:  # on asyncio's own loop, as the hub's HTTP API runs
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise SystemExit("the floor could not start")
            await asyncio.sleep(0.01)
        print(FLOOR_READY + str(server.servers[0].sockets[0].getsockname()[1]), flush=True)
        await task

    asyncio.run(run())


class AskFailed(Exception):
    pass


class Client(Protocol):
    def ask(self) -> int:
        """One Ask, read to its end: the number of messages (gRPC) or events (HTTP) it took."""
        ...

    def close(self) -> None: ...


class GrpcClient:
    """A gRPC client with a channel (and connection) of its own, streaming Asks."""

    def __init__(self, address: str, ca: bytes, metadata: list[tuple[str, str]], request: Any):
        import grpc

        from protos import swarm_pb2_grpc as rpc

        options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection, as HTTP's
        self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), options)
        self.stub = rpc.SwarmStub(self.channel)
        self.metadata = metadata
        self.request = request

    def ask(self) -> int:
        replies, result = 0, None
        for reply in self.stub.Ask(self.request, metadata=self.metadata, timeout=120):
            replies += 1
            if reply.WhichOneof("body") == "result":
                result = reply.result
        if result is None:
            raise AskFailed("the hub ended the answer without a result")
        return replies

    def close(self) -> None:
        self.channel.close()


class HttpClient:
    """An httpx client (one keep-alive connection) streaming /v1/completions as SSE."""

    def __init__(self, url: str, key: str, ca: Path, max_tokens: int, prompt: str) -> None:
        import httpx

        self.client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=120)
        self.url = url
        self.headers = {"authorization": f"Bearer {key}"}
        self.body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                     "temperature": 0, "stream": True}  # fmt: skip

    def events(self) -> list[str]:
        """One Ask's `data:` payloads, up to and with [DONE]. The body is read to its end:
        leaving at [DONE] would close the connection (a TLS handshake for every Ask)."""
        out: list[str] = []
        with self.client.stream("POST", self.url, json=self.body, headers=self.headers) as r:
            if r.status_code != 200:
                r.read()
                raise AskFailed(f"HTTP {r.status_code}: {r.text[:300]}")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    out.append(line[len("data: ") :])
                    if out[-1].startswith('{"error"'):
                        raise AskFailed(f"error event: {out[-1][:300]}")
        if not out or out[-1] != "[DONE]":
            raise AskFailed("the stream ended without data: [DONE]")
        return out

    def ask(self) -> int:
        return len(self.events())

    def close(self) -> None:
        self.client.close()


@dataclass
class Target:
    """A server process to measure and how a client thread connects to it."""

    name: str
    pid: int
    connect: Callable[[], Client]


@dataclass
class Phase:
    asks: int
    cpu_ms: float  # the server process's CPU per completed Ask
    latencies_ms: list[float]
    events: float  # messages or events per Ask
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (its own, not its children's)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_phase(target: Target, clients: int, asks: int) -> Phase:
    """`clients` threads, each connected and warm (one Ask) before the window opens, then
    `asks` Asks each; the server's CPU over the window per Ask served."""
    ready, go = threading.Barrier(clients + 1), threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    events: list[int] = []
    errors: list[str] = []

    def client() -> None:
        c: Client | None = None
        try:
            c = target.connect()
            c.ask()
        except Exception as exc:
            with lock:
                errors.append(f"connect: {exc!r}")
            ready.abort()
            if c is not None:
                c.close()
            return
        try:
            ready.wait()
            go.wait()
            for _ in range(asks):
                start = time.perf_counter()
                try:
                    n = c.ask()
                except Exception as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                ms = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(ms)
                    events.append(n)
        except threading.BrokenBarrierError:
            pass
        finally:
            c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        go.set()
        for t in threads:
            t.join()
        raise SystemExit(f"{target.name}: a client could not connect: {errors[0]}") from None
    before = cpu_s(target.pid)
    go.set()
    for t in threads:
        t.join()
    spent = cpu_s(target.pid) - before
    done = len(latencies)
    if not done:
        raise SystemExit(f"{target.name}: every Ask failed; the first: {errors[0]}")
    return Phase(done, spent * 1000 / done, latencies, statistics.mean(events), len(errors),
                 errors)  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=60, help="asks at 1 client, per repetition")
    parser.add_argument("--per-client", type=int, default=10,
                        help="asks per client at 16 clients, per repetition")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--model", type=Path, help="serve this model folder (default: train one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few asks, 2 reps")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--serve-floor", nargs=3, metavar=("EVENTS", "CERT", "KEY"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.serve_floor:
        events, cert, key = args.serve_floor
        serve_floor(Path(events), cert, key)
        return
    if args.quick:
        args.asks, args.per_client, args.reps = 8, 2, 2
    bench(args)


def bench(args: argparse.Namespace) -> None:
    from bench.report import write_section
    from bench.routing_bench import PROMPT, tiny_model
    from harness import Hub, Node, Process, machine
    from harness.processes import stop_all
    from hub.tls import TLSFiles
    from protos import swarm_pb2 as pb
    from protos.wire import SamplingParams

    work = Path(tempfile.mkdtemp(prefix="api-bench-"))
    model = args.model or tiny_model(work)
    hub = Hub(work / "hub")
    nodes = [Node(work / f"node-{i}", model, hub, hub.token("medicine"), "--capacity", "4")
             for i in range(args.nodes)]  # fmt: skip
    processes: list[Any] = [*nodes, hub]
    try:
        hub.wait_connected([n.node_id for n in nodes], timeout=180)
        url = f"{hub.base_url}/completions"
        request = pb.AskRequest(prompt=PROMPT, sampling=SamplingParams(
            max_tokens=args.max_tokens, temperature=0).to_proto())  # fmt: skip
        ca = hub.ca.read_bytes()

        # What the floor streams: the hub's own events for this request.
        recorder = HttpClient(url, hub.key, hub.ca, args.max_tokens, PROMPT)
        recorded = recorder.events()
        recorder.close()
        chunks = [json.loads(e) for e in recorded if e != "[DONE]"]
        (work / "floor-events.json").write_text(json.dumps(chunks))
        tls = TLSFiles(hub.home)
        floor = Process(["python", str(Path(__file__).resolve()), "--serve-floor",
                         str(work / "floor-events.json"), str(tls.server_cert),
                         str(tls.server_key)], work / "floor.log")  # fmt: skip
        processes.insert(0, floor)
        floor_port = int(floor.wait_for(FLOOR_READY + r"(\d+)").group(1))
        floor_url = f"https://127.0.0.1:{floor_port}/v1/completions"

        targets = [
            Target("gRPC (hub)", hub.pid,
                   lambda: GrpcClient(hub.address, ca, hub.metadata, request)),
            Target("HTTP (hub)", hub.pid,
                   lambda: HttpClient(url, hub.key, hub.ca, args.max_tokens, PROMPT)),
            Target("HTTP floor (bare FastAPI)", floor.pid,
                   lambda: HttpClient(floor_url, "-", hub.ca, args.max_tokens, PROMPT)),
        ]  # fmt: skip
        print("warming up every path ...", flush=True)
        for target in targets:
            run_phase(target, 4, 5)
        idle_before = cpu_s(hub.pid)
        time.sleep(2.0)
        idle_ms_per_s = (cpu_s(hub.pid) - idle_before) * 1000 / 2.0

        levels = ((1, args.asks), (16, args.per_client))
        runs: dict[tuple[int, str], list[Phase]] = {}
        for rep in range(args.reps):
            for clients, asks in levels:
                order = targets[rep % 3 :] + targets[: rep % 3]  # no path always first
                for target in order:
                    print(f"rep {rep + 1}/{args.reps}: {clients} client(s) x {asks} asks, "
                          f"{target.name} ...", flush=True)  # fmt: skip
                    got = run_phase(target, clients, asks)
                    if got.failed:
                        print(f"  {got.failed} asks failed; the first: {got.errors[0]}",
                              flush=True)  # fmt: skip
                    runs.setdefault((clients, target.name), []).append(got)
    finally:
        stop_all(processes)

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Command: "
        f"`bench/api_bench.py --asks {args.asks} --per-client {args.per_client} --reps "
        f"{args.reps}`{' (--quick)' if args.quick else ''}. A real `slm-hub serve` (TLS) and "
        f"{args.nodes} `slm-node join` processes (slm-tiny, 1 torch thread, capacity 4); client "
        "threads in the benchmark's process, each with a connection of its own, asking greedy "
        f"{args.max_tokens}-token answers (every Ask scores the prompt on every node, then "
        "streams). gRPC: the streaming `Swarm.Ask`. HTTP: `POST /v1/completions` with "
        "`stream: true`, read to `data: [DONE]`. Floor: a bare FastAPI endpoint on uvicorn in "
        "a process of its own (same certificate) that streams the same events the hub streamed "
        f"for this request ({len(recorded)} `data:` events), with no routing, keys or ledger. "
        "CPU: the server process's own user + system time over a phase per Ask served, the "
        f"median [min-max] of {args.reps} repetitions (the paths in turn); latency: p50 over "
        "every repetition's Asks.",
        "",
        "| clients | path | asks | messages per Ask | server CPU per Ask (ms) | vs floor | "
        "above floor (ms) | p50 latency (ms) | failed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, _ in levels:
        floor_ms = statistics.median(p.cpu_ms for p in runs[(clients, targets[2].name)])
        for target in targets:
            got = runs[(clients, target.name)]
            cpu = [p.cpu_ms for p in got]
            mid = statistics.median(cpu)
            latencies = [ms for p in got for ms in p.latencies_ms]
            lines.append(
                f"| {clients} | {target.name} | {sum(p.asks for p in got)} | "
                f"{statistics.mean(p.events for p in got):.0f} | {mid:.2f} "
                f"[{min(cpu):.2f}-{max(cpu):.2f}] | {mid / floor_ms:.1f}x | "
                f"{mid - floor_ms:.2f} | {percentile(latencies, 50):.1f} | "
                f"{sum(p.failed for p in got)} |"
            )
    lines += [
        "",
        f"The hub's CPU while idle (node heartbeats, its timers) was {idle_ms_per_s:.1f} ms per "
        "second, inside its figures above. Its CPU per Ask covers the API key and the gate's "
        "limits, routing (a score request to every node, their replies and the winner's "
        "signature), relaying the answer, the ledger's record of the Ask and the metrics; the "
        "audit runs in a child process and is not counted. The floor's figures are what a "
        "Python HTTP server costs for the same bytes on this machine, so `vs floor` on the HTTP "
        "row is the hub's share over any such server; gRPC's row, against the same floor, says "
        "what that transport costs by comparison.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(args.out, KEY, TITLE, body)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
