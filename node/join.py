"""`slm-node join`: serve a hub over one node-initiated stream, and keep it up.

The node dials the hub (so it can sit behind NAT), proves its key, and then answers score and
generate requests as they arrive, up to `capacity` at once in worker threads: model compute
never blocks the stream. If the stream drops, the node dials again with exponential backoff
and jitter; a refusal (bad token, revoked key) is final and ends the command with the hub's
reason. SIGINT/SIGTERM drain: requests in progress finish, new ones are declined, then the
node leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from node.adoption import ModelWatcher
from node.service import NodeService
from node.supernode import SuperNode
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.channel import aio_channel
from protos.signing import challenge_bytes, sign
from slm.config import PRESETS, ModelConfig
from slm.errors import SLMError
from slm.sampling_params import SamplingParams

FATAL = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
)


class Refused(SLMError):
    """The hub refused this node; retrying would not help."""


@dataclass(frozen=True)
class JoinOptions:
    hub: str
    token: str = ""
    ca: Path | None = None
    insecure: bool = False
    capacity: int = 2
    drain_s: float = 30.0  # how long a shutdown waits for requests in progress
    backoff_s: tuple[float, float] = (0.5, 30.0)  # first and longest wait between dials


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
        if options.capacity < 1:
            raise SLMError(f"--capacity must be at least 1, got {options.capacity}")
        self.service = service
        self.options = options
        self.log = log
        self.supernode = supernode  # the training plane, started once the hub names it
        self.watcher: ModelWatcher | None = None  # swaps in models the training plane adopts
        self._beat_now: asyncio.Event | None = None
        self.pool = ThreadPoolExecutor(options.capacity, thread_name_prefix="node-worker")
        self.in_flight = 0
        self.draining = asyncio.Event()
        self._active: Counter[str] = Counter()  # request ids being worked on (score, generate)
        self._cancelled: set[str] = set()  # the subset the hub cancelled
        self._lock = threading.Lock()

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
                        raise Refused(f"the hub refused this node: {exc.details()}") from None
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
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.draining.set()
            for task in (training, watching):
                if task is not None:
                    await task

    def _drain(self) -> None:
        if not self.draining.is_set():
            self.log(f"draining: finishing {self.in_flight} request(s), declining new ones")
            self.draining.set()

    async def _session(self) -> bool:
        """One connection, from hello to the stream's end; True if the hub welcomed us."""
        svc = self.service
        loaded = svc.loaded
        outgoing: asyncio.Queue[pb.NodeMessage | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.NodeMessage]:
            while (message := await outgoing.get()) is not None:
                yield message

        async with aio_channel(self.options.hub, self.options.ca, self.options.insecure) as ch:
            call = rpc.NodeLinkStub(ch).Connect(requests())
            outgoing.put_nowait(pb.NodeMessage(hello=pb.Hello(
                public_key=svc.public_key, join_token=self.options.token, domain=loaded.domain,
                profile=loaded.profile.tolist(), model_version=loaded.version,
                capacity=self.options.capacity, preset=preset_name(loaded.config),
            )))  # fmt: skip
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
            interval = max(0.2, welcome.welcome.heartbeat_interval_ms / 1000)
            self.log(f"joined {self.options.hub} as node {welcome.welcome.node_id} "
                     f"({loaded.domain}, model {loaded.version})")  # fmt: skip
            if self.supernode is not None and welcome.welcome.flower_port:
                host = self.options.hub.rsplit(":", 1)[0]
                self.supernode.point_at(f"{host}:{welcome.welcome.flower_port}")
            beat = asyncio.create_task(self._heartbeat(outgoing, interval))
            drained = asyncio.create_task(self._leave_when_drained(outgoing))
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    self._handle(message, outgoing)
                await self._check_status(call)
            finally:
                beat.cancel()
                drained.cancel()
        return True

    async def _check_status(self, call: grpc.aio.StreamStreamCall) -> None:
        """Raise Refused if the hub ended the stream with a refusal."""
        code = await call.code()
        if code in FATAL:
            raise Refused(f"the hub refused this node: {await call.details()}")

    def version_changed(self) -> None:
        """Tell the hub the new model version now rather than at the next heartbeat."""
        if self._beat_now is not None:
            self._beat_now.set()

    async def _heartbeat(self, outgoing: asyncio.Queue, interval: float) -> None:
        assert self._beat_now is not None
        while True:
            outgoing.put_nowait(pb.NodeMessage(heartbeat=pb.Heartbeat(
                in_flight=self.in_flight, model_version=self.service.loaded.version)))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), interval)
            self._beat_now.clear()

    async def _leave_when_drained(self, outgoing: asyncio.Queue) -> None:
        await self.draining.wait()
        deadline = time.monotonic() + self.options.drain_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        outgoing.put_nowait(None)  # half-close: the hub ends the stream

    def _handle(self, message: pb.HubMessage, outgoing: asyncio.Queue) -> None:
        kind = message.WhichOneof("body")
        if kind == "cancel":
            with self._lock:
                if message.cancel.request_id in self._active:
                    self._cancelled.add(message.cancel.request_id)
            return
        if kind not in ("score", "generate"):
            return
        request = getattr(message, kind)
        if self.draining.is_set():
            outgoing.put_nowait(pb.NodeMessage(failed=pb.RequestFailed(
                request_id=request.request_id, message="the node is shutting down")))  # fmt: skip
            return
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        with self._lock:
            self._active[request.request_id] += 1
        work = self._score if kind == "score" else self._generate
        future = loop.run_in_executor(self.pool, work, request, outgoing, loop, time.monotonic())
        future.add_done_callback(lambda _: self._done(request.request_id))

    def _done(self, request_id: str) -> None:
        self.in_flight -= 1
        with self._lock:
            self._active[request_id] -= 1
            if not self._active[request_id]:
                del self._active[request_id]
                self._cancelled.discard(request_id)

    def _emit(self, loop: asyncio.AbstractEventLoop, outgoing: asyncio.Queue, message) -> None:  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(outgoing.put_nowait, message)

    def _fail(self, loop, outgoing, request_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
        self._emit(loop, outgoing, pb.NodeMessage(
            failed=pb.RequestFailed(request_id=request_id, message=text)))  # fmt: skip

    def _score(self, request: pb.ScoreRequest, outgoing, loop, received: float) -> None:  # type: ignore[no-untyped-def]
        rid = request.request_id
        waited_ms = (time.monotonic() - received) * 1000
        late = bool(request.deadline_ms) and waited_ms > request.deadline_ms
        if late or self._take_cancel(rid):
            self._fail(loop, outgoing, rid, f"too late: waited {waited_ms:.0f} ms for a worker")
            return
        try:
            s = self.service.score(rid, request.prompt)
        except Exception as exc:  # a bad prompt for this model; the hub skips this node
            self._fail(loop, outgoing, rid, f"score failed: {exc}")
            return
        took = (time.monotonic() - received) * 1000
        self._emit(loop, outgoing, pb.NodeMessage(score=pb.ScoreReply(
            request_id=rid, loglik=s.loglik, bits_per_byte=s.bits_per_byte,
            confidence=s.confidence, declined=s.declined, signature=s.signature, node_ms=took,
            model_version=s.model_version,
        )))  # fmt: skip
        self.log(f"score    {rid[:8]}  {took:6.0f} ms  confidence {s.confidence:.3f}"
                 + ("  (declined)" if s.declined else ""))  # fmt: skip

    def _generate(self, request: pb.GenerateRequest, outgoing, loop, received: float) -> None:  # type: ignore[no-untyped-def]
        rid = request.request_id
        try:
            params = SamplingParams(
                max_tokens=request.max_tokens, temperature=request.temperature,
                top_k=request.top_k, top_p=request.top_p, stop=tuple(request.stop),
                seed=request.seed if request.HasField("seed") else None,
            )  # fmt: skip
            tokens = 0
            for chunk in self.service.generate(rid, request.prompt, params):
                if self._take_cancel(rid):
                    self.log(f"generate {rid[:8]}  cancelled by the hub after {tokens} tokens")
                    return
                tokens = chunk.tokens
                took = (time.monotonic() - received) * 1000 if chunk.done else 0.0
                self._emit(loop, outgoing, pb.NodeMessage(chunk=pb.GenerateChunk(
                    request_id=rid, text=chunk.text, tokens=chunk.tokens, done=chunk.done,
                    signature=chunk.signature, node_ms=took, model_version=chunk.model_version,
                )))  # fmt: skip
        except Exception as exc:
            self._fail(loop, outgoing, rid, f"generate failed: {exc}")
            return
        took = (time.monotonic() - received) * 1000
        self.log(f"generate {rid[:8]}  {took:6.0f} ms  {tokens} tokens")

    def _take_cancel(self, request_id: str) -> bool:
        with self._lock:
            if request_id in self._cancelled:
                self._cancelled.discard(request_id)
                return True
        return False
