"""A crowd of simulated nodes, for load: each with a real key, a real join token and the real
handshake, then heartbeats at the interval the hub's welcome asks for; no model behind them,
so a thousand fit in one process."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np

from node.identity import generate_key, public_openssh
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.signing import challenge_bytes, sign
from slm.profile import PROFILE_DIM


class Crowd:
    def __init__(self, address: str, ca: bytes, tokens: list[str], channels: int = 10) -> None:
        self.address, self.ca, self.tokens = address, ca, tokens
        self.channels = [
            grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca))
            for _ in range(channels)
        ]
        self.joined = 0
        self.dropped = 0  # welcomed, then their stream ended before `leave`
        self._leave = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._rng = np.random.default_rng(0)

    async def join(self) -> None:
        """Every node joins at once; returns when all were welcomed (the first failure raises)."""
        self._tasks = [asyncio.create_task(self._node(i, t)) for i, t in enumerate(self.tokens)]
        while self.joined < len(self.tokens):
            await asyncio.sleep(0.2)
            for task in self._tasks:
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]

    async def leave(self) -> None:
        """Every node half-closes its stream; the channels close."""
        self._leave.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()

    async def _node(self, i: int, token: str) -> None:
        key = generate_key()
        public = public_openssh(key).decode()
        profile = self._rng.standard_normal(PROFILE_DIM).astype(np.float32)
        profile /= np.linalg.norm(profile)
        call = rpc.NodeLinkStub(self.channels[i % len(self.channels)]).Connect()
        await call.write(pb.NodeMessage(hello=pb.Hello(
            public_key=public, join_token=token, domain="sim", profile=profile.tolist(),
            model_version="0123456789abcdef", capacity=1, preset="simulated",
        )))  # fmt: skip
        challenge = await call.read()
        proof = sign(key, challenge_bytes(challenge.challenge.nonce, public))
        await call.write(pb.NodeMessage(proof=pb.Proof(signature=proof)))
        welcome = await call.read()
        if welcome is grpc.aio.EOF or welcome.WhichOneof("body") != "welcome":
            raise ConnectionError(f"simulated node {i} was not welcomed: {await call.details()}")
        self.joined += 1
        interval = welcome.welcome.heartbeat_interval_ms / 1000
        try:
            while not self._leave.is_set():
                await call.write(pb.NodeMessage(heartbeat=pb.Heartbeat(in_flight=0)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._leave.wait(), interval * 0.8)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the hub ended the stream
            self.dropped += 1
