"""`slm-hub serve`: the routing plane's gRPC server, a thin shell over hub/.

Nodes dial in on NodeLink.Connect and are admitted by hub.admission; each admitted stream
becomes a hub.connection.NodeConnection that the hub.router.Router routes over. Clients call
Swarm.Ask / ListNodes / Balance beside the standard health service. Every answer is recorded
in the ledger (group commit, hub.ledger_writer) before its result is sent; a client that
hangs up meanwhile does not stop the write. If the ledger cannot write, the answer (already
streamed) still gets its result and the hub logs the lost record loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from hub.admission import AdmissionError, admit, check_hello, check_proof
from hub.candidates import ProfileIndex
from hub.connection import NodeConnection
from hub.db import make_engine, upgrade
from hub.errors import StatusError
from hub.home import HubConfig
from hub.keys import load_public_key, load_signing_key
from hub.ledger import InferenceRecord, Ledger, LedgerError
from hub.ledger_writer import LedgerWriter
from hub.registry import NodeRegistry
from hub.router import Result, Router, RouterConfig, Switched, Text
from hub.superlink import SuperLink, SuperLinkOptions
from hub.tls import TLSFiles, is_loopback
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.signing import sha256_text
from slm.errors import SLMError
from slm.sampling_params import SamplingParams

log = logging.getLogger("slm-hub")

SERVICE = "swarmllm.v1.Swarm"
HELLO_TIMEOUT_S = 10.0
LAST_SEEN_EVERY_S = 60.0  # how often a heartbeat also refreshes `last_seen` in the registry
NODE_LEFT = "the node closed the stream"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7443
    insecure: bool = False  # plaintext; loopback only
    heartbeat_s: float = 5.0
    default_max_tokens: int = 128
    router: RouterConfig = field(default_factory=RouterConfig)
    flower: SuperLinkOptions = field(default_factory=SuperLinkOptions)


class Hub:
    """The live network: which admitted nodes are connected, and the router over them."""

    def __init__(self, cfg: HubConfig, options: ServeOptions) -> None:
        self.cfg = cfg
        self.options = options
        self.engine = make_engine(cfg.db_url)
        self.registry = NodeRegistry(self.engine)
        public = load_public_key(cfg.public_key_path)
        self.ledger = Ledger(self.engine, load_signing_key(cfg.signing_key_path), public,
                             cfg.rewards)  # fmt: skip
        self.writer = LedgerWriter(self.ledger)
        self.router = Router(ProfileIndex(), {}, options.router)
        self.connections: dict[str, NodeConnection] = {}
        self.priors: dict[str, float] = {}
        self.asks = 0  # Ask calls in flight, so shutdown can let them finish
        self._persisted: dict[str, float] = {}
        self.superlink = SuperLink(cfg.home, options.flower, cfg.db_url)
        self._registering: set[asyncio.Task] = set()

    def register_for_training(self, node_id: str, public_key: str) -> None:
        """Let the node's SuperNode into the training plane, in the background.

        Routing does not wait for it: a node answers prompts even while the SuperLink restarts.
        """
        task = asyncio.create_task(self._register(node_id, public_key))
        self._registering.add(task)
        task.add_done_callback(self._registering.discard)

    async def _register(self, node_id: str, public_key: str) -> None:
        try:
            await asyncio.wait_for(self.superlink.ready.wait(), 120)
            flower_id = await asyncio.to_thread(self.superlink.register, public_key, node_id[:32])
            await asyncio.to_thread(self.registry.set_flower_node_id, node_id, flower_id)
        except Exception as exc:  # the SuperLink is down or the database failed: retried on rejoin
            log.error("node %s: not registered on the training plane: %s", node_id[:12], exc)
            return
        log.info("node %s registered on the training plane as %d", node_id[:12], flower_id)

    def attach(self, conn: NodeConnection, profile: np.ndarray, reputation: float) -> None:
        """Route to this node from now on, replacing an older stream of the same node."""
        old = self.connections.get(conn.node_id)
        if old is not None:
            old.close("replaced by a new connection from the same node")
        self.connections[conn.node_id] = conn
        self.router.links[conn.node_id] = conn
        self.router.index.put(conn.node_id, profile)
        self.priors[conn.node_id] = reputation

    def detach(self, conn: NodeConnection) -> None:
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
            self.router.links.pop(conn.node_id, None)
            self.router.index.remove(conn.node_id)

    async def heard(self, conn: NodeConnection, version_changed: bool) -> None:
        """Persist last_seen now and then, and a new model version at once."""
        now = time.monotonic()
        if version_changed or now - self._persisted.get(conn.node_id, 0.0) > LAST_SEEN_EVERY_S:
            self._persisted[conn.node_id] = now
            await asyncio.to_thread(self.registry.seen, conn.node_id, conn.model_version)

    async def record(self, prompt: str, result: Result) -> None:
        record = InferenceRecord(
            request_id=result.request_id,
            prompt_sha256=sha256_text(prompt),
            outcome="success" if result.verified else "unverified",
            segments=result.segments,
            candidates=[
                {
                    "node": c.node_id,
                    "domain": c.domain,
                    "loglik": c.loglik,
                    "posterior": c.posterior,
                    "declined": c.declined,
                }
                for c in result.candidates
            ],
            domain=result.domain,
            latency_ms=result.latency_ms,
            prompt=prompt if self.cfg.keep_prompts else None,
        )
        await asyncio.shield(asyncio.wrap_future(self.writer.submit(record)))


def _code(status: str) -> grpc.StatusCode:
    return grpc.StatusCode[status]


class NodeLinkServicer(rpc.NodeLinkServicer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def Connect(
        self, request_iterator: AsyncIterator[pb.NodeMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HubMessage]:
        hub = self.hub
        messages = request_iterator.__aiter__()
        try:
            hello = await self._expect(messages, "hello")
            applicant = check_hello(hello)
            nonce = secrets.token_bytes(32)
            yield pb.HubMessage(challenge=pb.Challenge(nonce=nonce))
            proof = await self._expect(messages, "proof")
            check_proof(applicant, nonce, proof.signature)
            record = await asyncio.to_thread(
                admit, hub.engine, hub.registry, applicant, context.peer()
            )
            await asyncio.to_thread(hub.ledger.ensure_accounts, [applicant.node_id])
        except StatusError as exc:  # AdmissionError or TokenError
            log.warning("refused a node from %s: %s", context.peer(), exc)
            await context.abort(_code(exc.status), str(exc))
            return
        except (SLMError, SQLAlchemyError) as exc:  # the database, not the node, failed
            log.error("could not admit a node from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the hub's database failed: {exc}")
            return
        conn = NodeConnection(
            applicant.node_id, applicant.domain, applicant.public_key, applicant.model_version,
            applicant.capacity,
        )  # fmt: skip
        hub.attach(conn, applicant.profile, record.reputation)
        hub.register_for_training(conn.node_id, applicant.public_key)
        log.info("node %s joined: %s, model %s, capacity %d, from %s", conn.node_id[:12],
                 conn.domain, conn.model_version, conn.capacity, context.peer())  # fmt: skip
        interval_ms = int(hub.options.heartbeat_s * 1000)
        reader = asyncio.create_task(self._read(conn, messages))
        try:
            yield pb.HubMessage(
                welcome=pb.Welcome(
                    node_id=conn.node_id,
                    heartbeat_interval_ms=interval_ms,
                    flower_port=hub.superlink.port,
                )
            )
            async for message in conn.outgoing(3 * hub.options.heartbeat_s):
                yield message
            if conn.closed != NODE_LEFT:  # tell the node why, rather than a bare OK
                await context.abort(grpc.StatusCode.UNAVAILABLE, conn.closed or "closed")
        finally:
            conn.close(conn.closed or "the hub closed the stream")
            reader.cancel()
            hub.detach(conn)
            log.info("node %s left: %s", conn.node_id[:12], conn.closed)

    async def _expect(self, messages: AsyncIterator[pb.NodeMessage], kind: str):  # type: ignore[no-untyped-def]
        try:
            message = await asyncio.wait_for(messages.__anext__(), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise AdmissionError(
                "DEADLINE_EXCEEDED", f"no {kind} within {HELLO_TIMEOUT_S:.0f} s"
            ) from None
        except StopAsyncIteration:
            raise AdmissionError(
                "CANCELLED", f"the node closed the stream before its {kind}"
            ) from None
        if message.WhichOneof("body") != kind:
            raise AdmissionError(
                "INVALID_ARGUMENT", f"expected {kind}, got {message.WhichOneof('body')}"
            )
        return getattr(message, kind)

    async def _read(self, conn: NodeConnection, messages: AsyncIterator[pb.NodeMessage]) -> None:
        reason = NODE_LEFT
        try:
            async for message in messages:
                version = conn.model_version
                conn.deliver(message)
                if message.WhichOneof("body") == "heartbeat":
                    try:
                        await self.hub.heard(conn, conn.model_version != version)
                    except Exception as exc:  # a database hiccup must not drop a healthy node
                        log.error("could not record a heartbeat of %s: %s", conn.node_id, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke: the node died or the network went
            reason = f"stream error: {exc}"
        conn.close(reason)


def _ask_request(data: bytes) -> pb.AskRequest | None:
    """None for bytes that are not an AskRequest (e.g. a prompt that is not UTF-8), so Ask can
    answer INVALID_ARGUMENT; gRPC's own handling of a failed parse would be INTERNAL."""
    try:
        return pb.AskRequest.FromString(data)
    except DecodeError:
        return None


def sampling_params(request: pb.AskRequest, default_max_tokens: int) -> SamplingParams:
    """The client's sampling settings, 0 meaning the hub's default where the proto says so."""
    return SamplingParams(
        max_tokens=request.max_tokens or default_max_tokens,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p or 1.0,
        stop=tuple(request.stop),
        seed=request.seed if request.HasField("seed") else None,
    )


class SwarmServicer(rpc.SwarmServicer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def Ask(
        self, request: pb.AskRequest | None, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskReply]:
        hub = self.hub
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request could not be parsed; the prompt must be valid UTF-8",
            )
        hub.asks += 1
        try:
            params = sampling_params(request, hub.options.default_max_tokens)
            events = hub.router.ask(request.prompt, params, hub.priors)
            async with contextlib.aclosing(events):  # a hang-up cancels the node's work now
                async for event in events:
                    if isinstance(event, Text):
                        yield pb.AskReply(text=event.text)
                    elif isinstance(event, Switched):
                        log.warning("node %s %s; %s continues", event.from_node[:12],
                                    event.reason, event.to_node[:12])  # fmt: skip
                        note = pb.Switched(
                            from_node=event.from_node, to_node=event.to_node, reason=event.reason
                        )
                        yield pb.AskReply(switched=note)
                    else:
                        await self._record(request.prompt, event)
                        yield pb.AskReply(result=_result(event))
        except StatusError as exc:
            await context.abort(_code(exc.status), str(exc))
        except SLMError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            hub.asks -= 1

    async def _record(self, prompt: str, result: Result) -> None:
        try:
            await self.hub.record(prompt, result)
        except Exception as exc:  # the answer stands; the loss is logged
            log.error("could not record inference %s in the ledger: %s", result.request_id, exc)
        log.info("ask %s -> %s node %s, p=%.3f, %d tokens, %.0f ms (hub %.1f ms)",
                 result.request_id[:8], result.domain, result.node_id[:12], result.confidence,
                 sum(t for _, t in result.segments), result.latency_ms,
                 result.hub_overhead_ms)  # fmt: skip

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNodesReply:
        records = await asyncio.to_thread(self.hub.registry.all)
        nodes = []
        for r in records:
            conn = self.hub.connections.get(r.node_id)
            nodes.append(pb.NodeInfo(
                node_id=r.node_id, domain=r.domain,
                model_version=conn.model_version if conn else r.model_version,
                connected=conn is not None, last_seen=r.last_seen,
                capacity=conn.capacity if conn else r.capacity,
                in_flight=conn.in_flight if conn else 0, reputation=r.reputation,
                flower_node_id=int(r.flower_node_id or 0),
            ))  # fmt: skip
        return pb.ListNodesReply(nodes=nodes)

    async def Balance(
        self, request: pb.BalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.BalanceReply:
        ledger = self.hub.ledger
        try:
            account = await asyncio.to_thread(ledger.resolve_node, request.node_id)
        except LedgerError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        balances = await asyncio.to_thread(ledger.balances)
        return pb.BalanceReply(
            node_id=account.removeprefix("node:"), micro_credits=balances.get(account, 0)
        )


def _result(r: Result) -> pb.AskResult:
    return pb.AskResult(
        request_id=r.request_id, node_id=r.node_id, domain=r.domain, confidence=r.confidence,
        candidates=[
            pb.Candidate(node_id=c.node_id, domain=c.domain, profile_similarity=c.similarity,
                         loglik=c.loglik, posterior=c.posterior, declined=c.declined)
            for c in r.candidates
        ],
        tokens=sum(t for _, t in r.segments), latency_ms=r.latency_ms,
        hub_overhead_ms=r.hub_overhead_ms,
    )  # fmt: skip


def _swarm_handler(servicer: SwarmServicer) -> grpc.GenericRpcHandler:
    """The generated Swarm handlers, except that Ask parses with `_ask_request`."""
    handlers = {
        "Ask": grpc.unary_stream_rpc_method_handler(
            servicer.Ask, request_deserializer=_ask_request,
            response_serializer=pb.AskReply.SerializeToString,
        ),
        "ListNodes": grpc.unary_unary_rpc_method_handler(
            servicer.ListNodes, request_deserializer=pb.ListNodesRequest.FromString,
            response_serializer=pb.ListNodesReply.SerializeToString,
        ),
        "Balance": grpc.unary_unary_rpc_method_handler(
            servicer.Balance, request_deserializer=pb.BalanceRequest.FromString,
            response_serializer=pb.BalanceReply.SerializeToString,
        ),
    }  # fmt: skip
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def check_listen(options: ServeOptions) -> None:
    if options.insecure and not is_loopback(options.host):
        raise SLMError(
            f"--insecure serves plaintext, so it is refused on {options.host}; it is for "
            "127.0.0.1 / localhost only. Drop --insecure: nodes join with --ca <home>/ca.pem"
        )
    if not 0 <= options.port <= 65535:
        raise SLMError(f"--port must be 0..65535, got {options.port}")
    if not 0 <= options.flower.port <= 65535:
        raise SLMError(f"--flower-port must be 0..65535, got {options.flower.port}")
    if options.port and options.port == options.flower.port:
        raise SLMError(f"--port and --flower-port must differ, both are {options.port}")


async def serve(
    cfg: HubConfig, options: ServeOptions, ready: Callable[[int], None] | None = None
) -> None:
    """Run until SIGINT/SIGTERM; `ready(port)` is called once the port is bound."""
    check_listen(options)
    await asyncio.to_thread(upgrade, make_engine(cfg.db_url))
    hub = Hub(cfg, options)
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ]
    )
    rpc.add_NodeLinkServicer_to_server(NodeLinkServicer(hub), server)
    server.add_generic_rpc_handlers((_swarm_handler(SwarmServicer(hub)),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{options.host}:{options.port}"
    try:
        if options.insecure:
            port = server.add_insecure_port(address)
        else:
            tls = TLSFiles(cfg.home)
            credentials = grpc.ssl_server_credentials(
                [(tls.server_key.read_bytes(), tls.server_cert.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise SLMError(f"cannot listen on {address}: {exc}; is another hub running?") from None
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor = asyncio.create_task(hub.superlink.supervise(stop))
    if ready is not None:
        ready(port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing %d answers in flight (up to 5 s)", hub.asks)
        await health_servicer.enter_graceful_shutdown()
        stopping = asyncio.create_task(server.stop(grace=5))  # refuses new calls at once
        deadline = time.monotonic() + 5
        while hub.asks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(hub.connections.values()):
            conn.close("the hub is shutting down")
        await stopping
        stop.set()
        await supervisor
        await asyncio.to_thread(hub.writer.close)
