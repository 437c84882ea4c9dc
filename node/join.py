"""`slm-node join`: dial a hub over one node-initiated stream, and keep it up.

The node dials the hub (so it can sit behind NAT), proves its key, and hands every request
that follows to its dispatcher (node/dispatch.py), which serves them in worker threads. If the
stream drops, the node dials again with exponential backoff and jitter; a refusal (bad token,
revoked key) is final and ends the command with the hub's reason. SIGINT/SIGTERM drain:
requests in progress finish, new ones are declined, then the node leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Callable

import grpc

from node.adoption import ModelWatcher
from node.config import JoinOptions
from node.dispatch import Dispatcher
from node.service import NodeService
from node.supernode import SuperNode
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.channel import aio_channel
from protos.signing import challenge_bytes, sign
from slm.config import PRESETS, ModelConfig
from slm.errors import SLMError
from slm.federated import base_of

FATAL = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,  # a hub of another protocol version: upgrade one of the two
)


class Refused(SLMError):
    """The hub refused this node; retrying would not help."""


def refusal(code: grpc.StatusCode, details: str) -> Refused:
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Refused(
            f"the hub does not speak this node's protocol ({pb.DESCRIPTOR.package}); upgrade "
            "the older of the two"
        )
    return Refused(f"the hub refused this node: {details}")


def preset_name(config: ModelConfig) -> str:
    """The preset this model's shape matches, for the hub's node table."""
    return next((name for name, p in PRESETS.items() if p.model == config), "custom")


class Backoff:
    """0.5 s, 1 s, 2 s ... up to the cap, each with ±25% jitter so restarts don't stampede."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.next_s = first, cap, first

    def wait(self) -> float:
        value = self.next_s * random.uniform(0.75, 1.25)
        self.next_s = min(self.cap, self.next_s * 2)
        return value

    def reset(self) -> None:
        self.next_s = self.first


class NodeAgent:
    def __init__(
        self, service: NodeService, options: JoinOptions, log: Callable[[str], None],
        supernode: SuperNode | None = None,
    ) -> None:  # fmt: skip
        self.service = service
        self.options = options
        self.log = log
        self.supernode = supernode  # the training plane, started once the hub names it
        self.watcher: ModelWatcher | None = None  # swaps in models the training plane adopts
        self.dispatcher = Dispatcher(service, options.capacity, log)
        self.draining = self.dispatcher.draining
        self._beat_now: asyncio.Event | None = None

    async def run(self) -> None:
        """Serve until drained; raises Refused when the hub will not admit this node."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._drain)
        backoff = Backoff(*self.options.backoff_s)
        self._beat_now = asyncio.Event()
        training = (
            asyncio.create_task(self.supernode.supervise(self.draining)) if self.supernode else None
        )
        watching = asyncio.create_task(self.watcher.watch(self.draining)) if self.watcher else None
        try:
            while not self.draining.is_set():
                try:
                    welcomed = await self._session()
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in FATAL:
                        raise refusal(exc.code(), exc.details() or "") from None
                    welcomed, why = False, f"{exc.code().name}: {exc.details()}"
                except (ConnectionError, OSError) as exc:
                    welcomed, why = False, str(exc)
                else:
                    why = "the hub closed the connection"
                if self.draining.is_set():
                    break
                if welcomed:
                    backoff.reset()
                delay = backoff.wait()
                self.log(f"hub {self.options.hub} unreachable ({why}); retrying in {delay:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.draining.wait(), delay)
        finally:
            self.dispatcher.close()
            self.draining.set()
            for task in (training, watching):
                if task is not None:
                    await task

    def _drain(self) -> None:
        if not self.draining.is_set():
            self.log(
                f"draining: finishing {self.dispatcher.in_flight} request(s), declining new ones"
            )
            self.draining.set()

    def _hello(self) -> pb.NodeMessage:
        loaded, svc = self.service.loaded, self.service
        return pb.NodeMessage(hello=pb.Hello(
            public_key=svc.public_key, join_token=self.options.token, domain=loaded.domain,
            profile=loaded.profile.tolist(), model_version=loaded.version,
            capacity=self.options.capacity, preset=preset_name(loaded.config),
            role=self.options.role, base=base_of(loaded),
            refines=svc.refiner is not None,
            centroid=[] if svc.centroid is None else svc.centroid.tolist(),
            words_sha256=svc.words_sha256,
        ))  # fmt: skip

    async def _session(self) -> bool:
        """One connection, from hello to the stream's end; True if the hub welcomed us."""
        svc = self.service
        outgoing: asyncio.Queue[pb.NodeMessage | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.NodeMessage]:
            while (message := await outgoing.get()) is not None:
                yield message

        async with aio_channel(self.options.hub, self.options.ca, self.options.insecure) as ch:
            call = rpc.NodeLinkStub(ch).Connect(requests())
            outgoing.put_nowait(self._hello())
            challenge = await call.read()
            if challenge is grpc.aio.EOF:
                await self._check_status(call)
                raise ConnectionError("the hub closed the stream during admission")
            statement = challenge_bytes(challenge.challenge.nonce, svc.public_key)
            outgoing.put_nowait(pb.NodeMessage(proof=pb.Proof(signature=sign(svc.key, statement))))
            welcome = await call.read()
            if welcome is grpc.aio.EOF:
                await self._check_status(call)
                return False
            if welcome.WhichOneof("body") != "welcome":
                call.cancel()
                raise ConnectionError(f"the hub sent {welcome.WhichOneof('body')}, not a welcome")
            self._welcomed(welcome.welcome)
            interval = max(0.2, welcome.welcome.heartbeat_interval_ms / 1000)
            beat = asyncio.create_task(self._heartbeat(outgoing, interval))
            drained = asyncio.create_task(self._leave_when_drained(outgoing))
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    self.dispatcher.handle(message, outgoing.put_nowait)
                await self._check_status(call)
            finally:
                beat.cancel()
                drained.cancel()
        return True

    def _welcomed(self, welcome: pb.Welcome) -> None:
        loaded = self.service.loaded
        self.log(f"joined {self.options.hub} as node {welcome.node_id} "
                 f"({loaded.domain}, model {loaded.version})")  # fmt: skip
        if self.supernode is not None and welcome.flower_port:
            host = self.options.hub.rsplit(":", 1)[0]
            self.supernode.point_at(f"{host}:{welcome.flower_port}")

    async def _check_status(self, call: grpc.aio.StreamStreamCall) -> None:
        """Raise Refused if the hub ended the stream with a refusal."""
        code = await call.code()
        if code in FATAL:
            raise refusal(code, await call.details())

    def version_changed(self) -> None:
        """Tell the hub the new model version now rather than at the next heartbeat."""
        if self._beat_now is not None:
            self._beat_now.set()

    async def _heartbeat(self, outgoing: asyncio.Queue, interval: float) -> None:
        assert self._beat_now is not None
        while True:
            outgoing.put_nowait(pb.NodeMessage(heartbeat=pb.Heartbeat(
                in_flight=self.dispatcher.in_flight,
                model_version=self.service.loaded.version,
            )))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), interval)
            self._beat_now.clear()

    async def _leave_when_drained(self, outgoing: asyncio.Queue) -> None:
        await self.draining.wait()
        deadline = time.monotonic() + self.options.drain_s
        while self.dispatcher.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        outgoing.put_nowait(None)  # half-close: the hub ends the stream
