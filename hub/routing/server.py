"""The routing plane's gRPC server: `NodeLink.Connect`, a node's stream, admitted by
`admission.Handshake`, then served as a `NodeConnection`; beside it the clients' service
(hub/api/grpc_api.py, passed in as a handler) and the standard health service."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.errors import StatusError
from hub.routing.admission import Handshake
from hub.routing.connection import NodeConnection
from hub.routing.network import Network
from hub.tls import TLSFiles
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.channel import SERVER_OPTIONS
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

CLIENT_SERVICE = pb.DESCRIPTOR.services_by_name["Swarm"].full_name  # swarmllm.v2.Swarm
NODE_LEFT = "the node closed the stream"


def _code(status: str) -> grpc.StatusCode:
    return grpc.StatusCode[status]


async def abort_internal(
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
            await abort_internal(context, exc, f"could not admit a node from {peer}",
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


async def start_server(
    node_link: NodeLinkServicer, clients: grpc.GenericRpcHandler, address: str,
    tls_home: Path | None,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:  # fmt: skip
    """The routing plane's server with the clients' service beside it, started on `address`
    (TLS from `tls_home`; None: plaintext), reporting SERVING; (server, health servicer, the
    bound port)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    rpc.add_NodeLinkServicer_to_server(node_link, server)
    server.add_generic_rpc_handlers((clients,))
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
    for name in ("", CLIENT_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port
