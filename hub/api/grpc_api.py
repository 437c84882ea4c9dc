"""The Swarm gRPC service: a thin shell over `AskService`, the gate and the ledger's reads.

The API key travels as call metadata (`authorization: Bearer <key>`), an idempotency key as
`idempotency-key`. An AskRequest is parsed here rather than by gRPC, so bytes that are not one
(or too many of them) get INVALID_ARGUMENT instead of gRPC's INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.message import DecodeError

from hub.access.gate import Gate
from hub.access.keys import KeyRecord
from hub.api.asks import Answered, AskService, Question
from hub.errors import StatusError
from hub.routing.config import MAX_PROMPT_LIMIT
from hub.routing.network import Network
from hub.routing.router import DIRECT, REFINE, Drafted, Result, Routed, Switched
from hub.routing.server import abort_internal
from protos import swarm_pb2 as pb
from protos.errors import WireError
from protos.wire import SamplingParams
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

SERVICE = pb.DESCRIPTOR.services_by_name["Swarm"].full_name  # swarmllm.v2.Swarm
# the largest prompt and draft a hub may allow, and the settings
MAX_ASK_BYTES = 2 * MAX_PROMPT_LIMIT + 4096
MODES = {pb.MODE_DIRECT: DIRECT, pb.MODE_REFINE: REFINE}  # MODE_DEFAULT: the hub's

Balance = Callable[[KeyRecord, str], tuple[str, str, int]]  # (caller, node) -> node, account, µ


class _Unreadable:
    def __init__(self, why: str) -> None:
        self.why = why


def _ask_request(data: bytes) -> pb.AskRequest | _Unreadable:
    if len(data) > MAX_ASK_BYTES:
        return _Unreadable(f"the request is {len(data)} bytes; an Ask is at most {MAX_ASK_BYTES}")
    try:
        return pb.AskRequest.FromString(data)
    except DecodeError:
        return _Unreadable("the request could not be parsed; the prompt must be valid UTF-8")


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class SwarmServicer:
    def __init__(self, service: AskService, gate: Gate, network: Network, balance: Balance):
        self.service = service
        self.gate = gate
        self.network = network
        self.balance = balance

    async def _caller(self, context: grpc.aio.ServicerContext, ask: bool = False) -> KeyRecord:
        """The caller's key; a call that is not an Ask counts against the key's rate here (an
        Ask's place is held by the gate)."""
        key = await self.gate.authenticate(_metadata(context).get("authorization"))
        if not ask:
            self.gate.limiter.take(key)
        return key

    async def Ask(
        self, request: pb.AskRequest | _Unreadable, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskReply]:
        try:
            if isinstance(request, _Unreadable):
                raise StatusError("INVALID_ARGUMENT", request.why)
            key = await self._caller(context, ask=True)
            try:
                params = SamplingParams.from_proto(request.sampling)
            except WireError as exc:
                self.service.metrics.rejected.labels("invalid_argument").inc()
                raise StatusError("INVALID_ARGUMENT", str(exc)) from None
            question = Question(request.prompt, params, request.domain,
                                _metadata(context).get("idempotency-key", ""),
                                MODES.get(request.mode, ""),
                                request.draft if request.draft else None)  # fmt: skip
            events = self.service.ask(key, question)
            async with contextlib.aclosing(events):  # a hang-up cancels the node's work now
                async for event in events:
                    if isinstance(event, str):
                        yield pb.AskReply(text=event)
                    elif isinstance(event, Switched):
                        yield pb.AskReply(switched=pb.Switched(
                            from_node=event.from_node, to_node=event.to_node, reason=event.reason,
                        ))  # fmt: skip
                    elif isinstance(event, Answered):
                        yield pb.AskReply(result=_result(event.result, event.charged))
                    elif isinstance(event, Drafted):
                        yield pb.AskReply(drafted=pb.Drafted(
                            by=event.by, text=event.text, tokens=event.tokens))  # fmt: skip
                    else:
                        assert isinstance(event, Routed)
        except StatusError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except (SLMError, WireError) as exc:  # the request's own fault: say what is wrong
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            await abort_internal(context, exc, "an ask failed")

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNodesReply:
        try:
            key = await self._caller(context)
            records = await asyncio.to_thread(self.network.registry.all)
        except StatusError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except Exception as exc:
            await abort_internal(context, exc, "could not list the nodes")
        nodes = []
        for r in records:
            conn = self.network.connections.get(r.node_id)
            nodes.append(pb.NodeInfo(
                node_id=r.node_id, domain=r.domain,
                model_version=conn.model_version if conn else r.model_version,
                connected=conn is not None, last_seen=r.last_seen,
                capacity=conn.capacity if conn else r.capacity,
                in_flight=conn.in_flight if conn else 0,
                reputation=r.reputation if key.admin else 0.0,
                flower_node_id=int(r.flower_node_id or 0) if key.admin else 0,
                role=r.role, refines=bool(conn and conn.refines),
            ))  # fmt: skip
        return pb.ListNodesReply(nodes=nodes)

    async def Balance(
        self, request: pb.BalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.BalanceReply:
        try:
            key = await self._caller(context)
            node_id, account, micro = await asyncio.to_thread(self.balance, key, request.node_id)
        except StatusError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except Exception as exc:
            await abort_internal(context, exc, "could not read a balance")
        return pb.BalanceReply(node_id=node_id, micro_credits=micro, account=account)


def _result(r: Result, charged: int) -> pb.AskResult:
    return pb.AskResult(
        request_id=r.request_id, node_id=r.node_id, domain=r.domain, confidence=r.confidence,
        candidates=[
            pb.Candidate(node_id=c.node_id, domain=c.domain, profile_similarity=c.similarity,
                         loglik=c.loglik, posterior=c.posterior, declined=c.declined,
                         similarity=c.claimed_similarity, evidence=c.evidence,
                         words_loglik=c.words_loglik)
            for c in r.candidates
        ],
        tokens=sum(t for _, t in r.segments[r.draft_segments :]), latency_ms=r.latency_ms,
        hub_overhead_ms=r.hub_overhead_ms, charged_micro_credits=charged,
        mode=pb.MODE_REFINE if r.mode == REFINE else pb.MODE_DIRECT,
        drafted_by=r.drafted.by if r.drafted else "",
        draft_tokens=sum(t for _, t in r.segments[: r.draft_segments]),
    )  # fmt: skip


def swarm_handler(servicer: SwarmServicer) -> grpc.GenericRpcHandler:
    """The Swarm service's handlers, Ask parsing with `_ask_request`."""
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
