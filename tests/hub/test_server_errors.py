"""A failure inside the hub never reaches the peer as text: the routing server's shells answer
with a status and an incident id, and the log keeps the exception (in-process server; the
database error is injected, since a healthy database will not fail on cue)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from sqlalchemy.exc import OperationalError

from hub.access.gate import Gate
from hub.access.key_limits import KeyLimits
from hub.access.keys import KeyCache, KeyStore
from hub.access.limits import Limiter
from hub.api.asks import AskService
from hub.api.grpc_api import SwarmServicer, swarm_handler
from hub.api.metrics import Metrics
from hub.ledger.rewards import Rewards
from hub.routing.config import RouterConfig
from hub.routing.network import Network
from hub.routing.server import NodeLinkServicer, start_server
from hub.storage.engine import make_engine, sqlite_url, upgrade
from node.identity import generate_key, public_openssh
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.signing import challenge_bytes, sign
from slm.profile import PROFILE_DIM

SECRET = "SELECT token_sha256 FROM join_tokens WHERE x = 'postgresql://admin:hunter2@db'"


def _fail(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise OperationalError(SECRET, {}, Exception("connection refused"))


async def _serve_and(tmp_path, network_patch, client):  # type: ignore[no-untyped-def]
    engine = make_engine(sqlite_url(tmp_path / "hub.db"))
    upgrade(engine)
    network = Network(engine, RouterConfig())
    network_patch(network)
    servicer = NodeLinkServicer(network, 1.0, lambda: 0)
    key, _ = KeyStore(engine).create("admin", KeyLimits(), admin=True)
    gate = Gate(KeyCache(KeyStore(engine)), Limiter(8), lambda _: 10**12, lambda _: False)
    asks = AskService(network, gate, None, Rewards(), Metrics())  # type: ignore[arg-type]
    swarm = SwarmServicer(asks, gate, network, balance=_fail)
    server, _, port = await start_server(servicer, swarm_handler(swarm), "127.0.0.1:0", None)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await client(channel, [("authorization", f"Bearer {key}")])
    finally:
        await server.stop(None)


async def _join(channel: grpc.aio.Channel, _: object) -> grpc.aio.AioRpcError:
    key = generate_key()
    public = public_openssh(key).decode()
    call = rpc.NodeLinkStub(channel).Connect()
    await call.write(pb.NodeMessage(hello=pb.Hello(
        public_key=public, join_token="slmj_x", domain="law",
        profile=[1.0] + [0.0] * (PROFILE_DIM - 1), model_version="v1", capacity=1,
    )))  # fmt: skip
    challenge = await call.read()
    proof = sign(key, challenge_bytes(challenge.challenge.nonce, public))
    await call.write(pb.NodeMessage(proof=pb.Proof(signature=proof)))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call.read()
    return failed.value


def _no_leak(error: grpc.aio.AioRpcError, code: grpc.StatusCode, caplog) -> None:  # type: ignore[no-untyped-def]
    assert error.code() == code
    details = error.details() or ""
    assert "incident" in details and "SELECT" not in details and "hunter2" not in details
    incident = details.split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR and logged[0].exc_info is not None


def test_a_database_failure_at_admission_is_an_incident_id_not_sql(tmp_path, caplog) -> None:
    def broken(network: Network) -> None:
        network.admit = _fail  # type: ignore[method-assign]

    error = asyncio.run(_serve_and(tmp_path, broken, _join))
    _no_leak(error, grpc.StatusCode.UNAVAILABLE, caplog)  # the node retries later


def test_internal_failures_of_client_calls_are_incident_ids(tmp_path, caplog) -> None:
    def broken(network: Network) -> None:
        network.registry.all = _fail  # type: ignore[method-assign]
        network.router.validate = lambda *args: None  # type: ignore[method-assign]
        network.router.ask = _fail  # type: ignore[method-assign]

    async def calls(channel: grpc.aio.Channel, key: list) -> list[grpc.aio.AioRpcError]:
        stub, errors = rpc.SwarmStub(channel), []
        for call in (
            lambda: stub.ListNodes(pb.ListNodesRequest(), metadata=key),
            lambda: stub.Balance(pb.BalanceRequest(node_id="ab"), metadata=key),
            lambda: stub.Ask(pb.AskRequest(prompt="hello"), metadata=key).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call()
            errors.append(failed.value)
        return errors

    for error in asyncio.run(_serve_and(tmp_path, broken, calls)):
        _no_leak(error, grpc.StatusCode.INTERNAL, caplog)
