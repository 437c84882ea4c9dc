"""The routing plane's gRPC services, thin shells over the network and the router.

`NodeLink.Connect`: a node's stream, admitted by `admission.Handshake`, then served as a
`NodeConnection`. `Swarm`: clients ask (`Router.ask` events as `AskReply` messages), list the
nodes and read balances, beside the standard health service. What an answer is recorded in and
where balances come from are the serving process's (hub/serve.py), passed in as functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.errors import StatusError
from hub.routing.admission import Handshake
from hub.routing.connection import NodeConnection
from hub.routing.network import Network
from hub.routing.router import Result, Switched
from hub.tls import TLSFiles
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.channel import SERVER_OPTIONS
from protos.errors import WireError
from protos.wire import SamplingParams
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

SERVICE = pb.DESCRIPTOR.services_by_name["Swarm"].full_name  # swarmllm.v2.Swarm
NODE_LEFT = "the node closed the stream"

Record = Callable[[str, Result], Awaitable[None]]  # (prompt, result): durable once it returns
Balance = Callable[[str], tuple[str, int]]  # node id or prefix -> (node id, micro-credits)


def _code(status: str) -> grpc.StatusCode:
    return grpc.StatusCode[status]


async def _internal(
    context: grpc.aio.ServicerContext, exc: Exception, what: str,
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
) -> None:  # fmt: skip
    """End a call that failed inside the hub: the peer gets an incident id, never the exception
    (its text can hold SQL, parameters and paths); the log gets both."""
    incident = uuid.uuid4().hex[:12]
    log.error("%s [incident %s]: %s", what, incident, exc, exc_info=exc)
    await context.abort(code, f"the hub failed to serve this (incident {incident}); try again "
                              "later or tell its operator the incident id")  # fmt: skip


class NodeLinkServicer(rpc.NodeLinkServicer):
    def __init__(self, network: Network, heartbeat_s: float, flower_port: Callable[[], int]):
        self.network = network
        self.heartbeat_s = heartbeat_s
        self.flower_port = flower_port  # the training plane's port, told to every node

    async def Connect(
        self, request_iterator: AsyncIterator[pb.NodeMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HubMessage]:
        messages = request_iterator.__aiter__()
        handshake = Handshake(messages)
        peer = context.peer()  # here, on the event loop: gRPC's aio objects are not thread-safe
        try:
            yield await handshake.challenge()
            applicant, record = await handshake.admit(lambda a: self.network.admit(a, peer))
        except StatusError as exc:  # AdmissionError or TokenError
            log.warning("refused a node from %s: %s", context.peer(), exc)
            await context.abort(_code(exc.status), str(exc))
            return
        except Exception as exc:  # the hub (its database), not the node, failed
            await _internal(context, exc, f"could not admit a node from {peer}",
                            grpc.StatusCode.UNAVAILABLE)  # fmt: skip
            return
        conn = self.network.attach(applicant, record.reputation)
        log.info("node %s joined: %s, model %s, capacity %d, from %s", conn.node_id[:12],
                 conn.domain, conn.model_version, conn.capacity, context.peer())  # fmt: skip
        reader = asyncio.create_task(self._read(conn, messages))
        try:
            yield pb.HubMessage(welcome=pb.Welcome(
                node_id=conn.node_id, heartbeat_interval_ms=int(self.heartbeat_s * 1000),
                flower_port=self.flower_port(),
            ))  # fmt: skip
            async for message in conn.outgoing(3 * self.heartbeat_s):
                yield message
            if conn.closed != NODE_LEFT:  # tell the node why, rather than a bare OK
                await context.abort(_code(conn.status), conn.closed or "closed")
        finally:
            conn.close(conn.closed or "the hub closed the stream")
            reader.cancel()
            self.network.detach(conn)
            log.info("node %s left: %s", conn.node_id[:12], conn.closed)

    async def _read(self, conn: NodeConnection, messages: AsyncIterator[pb.NodeMessage]) -> None:
        reason = NODE_LEFT
        try:
            async for message in messages:
                version = conn.model_version
                conn.deliver(message)
                if message.WhichOneof("body") == "heartbeat":
                    self.network.heard(conn, conn.model_version != version)
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


class SwarmServicer(rpc.SwarmServicer):
    def __init__(self, network: Network, record: Record, balance: Balance) -> None:
        self.network = network
        self.record = record
        self.balance = balance

    async def Ask(
        self, request: pb.AskRequest | None, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskReply]:
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request could not be parsed; the prompt must be valid UTF-8",
            )
        network = self.network
        network.asks += 1
        try:
            params = SamplingParams.from_proto(request.sampling)
            events = network.router.ask(request.prompt, params, network.priors)
            async with contextlib.aclosing(events):  # a hang-up cancels the node's work now
                async for event in events:
                    if isinstance(event, str):
                        yield pb.AskReply(text=event)
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
        except (SLMError, WireError) as exc:  # the request's own fault: say what is wrong
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            await _internal(context, exc, "an ask failed")
        finally:
            network.asks -= 1

    async def _record(self, prompt: str, result: Result) -> None:
        try:
            await self.record(prompt, result)
        except Exception as exc:  # the answer stands; the loss is logged
            log.error("could not record inference %s in the ledger: %s", result.request_id, exc)
        log.info("ask %s -> %s node %s, p=%.3f, %d tokens, %.0f ms (hub %.1f ms)",
                 result.request_id[:8], result.domain, result.node_id[:12], result.confidence,
                 sum(t for _, t in result.segments), result.latency_ms,
                 result.hub_overhead_ms)  # fmt: skip

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNodesReply:
        try:
            records = await asyncio.to_thread(self.network.registry.all)
        except Exception as exc:
            await _internal(context, exc, "could not list the nodes")
        nodes = []
        for r in records:
            conn = self.network.connections.get(r.node_id)
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
        try:
            node_id, micro = await asyncio.to_thread(self.balance, request.node_id)
        except StatusError as exc:
            await context.abort(_code(exc.status), str(exc))
        except Exception as exc:
            await _internal(context, exc, "could not read a balance")
        return pb.BalanceReply(node_id=node_id, micro_credits=micro)


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


async def start_server(
    node_link: NodeLinkServicer, swarm: SwarmServicer, address: str, tls_home: Path | None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """The routing plane's server, started on `address` (TLS from `tls_home`; None: plaintext),
    reporting SERVING; (server, health servicer, the bound port)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    rpc.add_NodeLinkServicer_to_server(node_link, server)
    server.add_generic_rpc_handlers((_swarm_handler(swarm),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if tls_home is None:
            port = server.add_insecure_port(address)
        else:
            tls = TLSFiles(tls_home)
            credentials = grpc.ssl_server_credentials(
                [(tls.server_key.read_bytes(), tls.server_cert.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise SLMError(f"cannot listen on {address}: {exc}; is another hub running?") from None
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port
