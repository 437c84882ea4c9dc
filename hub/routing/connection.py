"""One admitted node's stream, seen from the hub: many requests multiplexed by id.

The router calls `score` and `generate` as if the node were a local object; this class turns
each call into a HubMessage on the node's outgoing queue and routes the node's replies back to
the waiting call by request id. At most `capacity` requests are outstanding per node, the rest
wait here (a waiting score counts against its deadline). When the stream ends, every waiting
call fails at once with ConnectionError, so the router can fail over without a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from protos import swarm_pb2 as pb
from protos.signing import centroid_sha256
from protos.wire import MAX_VERSION_CHARS, Piece, SamplingParams, Score


class NodeFailed(Exception):
    """The node reported that it could not serve a request."""


# Requests, cancels and fetches the hub may have queued for one node that it has not read yet:
# a node that heartbeats but stops reading is closed when its queue fills, not fed forever.
QUEUE_PER_SLOT = 4
QUEUE_SPARE = 16


def _printable(text: str, most: int = 200) -> str:
    """A node's own words, as they may reach logs and other clients: short, one line."""
    return "".join(c if c.isprintable() else " " for c in text[:most])


class NodeConnection:
    def __init__(
        self, node_id: str, domain: str, public_key: str, model_version: str, capacity: int,
        role: str = "domain", refines: bool = False, centroid: tuple[float, ...] = (),
        words_sha256: str = "",
    ) -> None:  # fmt: skip
        self.node_id = node_id
        self.domain = domain
        self.public_key = public_key
        self.model_version = model_version
        self.capacity = capacity
        self.role = role
        self.refines = refines
        self.centroid = centroid  # what its similarity claims are to (the auditor checks them)
        self.centroid_sha256 = centroid_sha256(centroid)
        self.words_sha256 = words_sha256  # of the counts its words claims are under (audited)
        self.in_flight = 0  # as the node last reported it
        self.last_heard = time.monotonic()
        self.closed: str | None = None  # why, once closed
        self.status = "UNAVAILABLE"  # the status the node's stream ends with, once closed
        self._outgoing: asyncio.Queue[pb.HubMessage | None] = asyncio.Queue(
            QUEUE_PER_SLOT * capacity + QUEUE_SPARE
        )
        self._scores: dict[str, asyncio.Future[pb.ScoreReply]] = {}
        self._streams: dict[str, asyncio.Queue[pb.GenerateChunk | Exception]] = {}
        self._fetches: dict[str, asyncio.Queue[pb.ModelPart | Exception]] = {}
        self._slots = asyncio.Semaphore(capacity)

    # --- the router's side (hub.routing.router.NodeLink) ------------------------------------------

    async def score(self, request_id: str, prompt: str, deadline_s: float) -> Score:
        async with self._slots:
            self._check_open()
            future: asyncio.Future[pb.ScoreReply] = asyncio.get_running_loop().create_future()
            self._scores[request_id] = future
            request = pb.ScoreRequest(
                request_id=request_id, prompt=prompt, deadline_ms=int(deadline_s * 1000)
            )
            self._send(pb.HubMessage(score=request))
            try:
                reply = await future
            except asyncio.CancelledError:  # the router gave up (deadline): tell the node
                self._cancel(request_id)
                raise
            finally:
                self._scores.pop(request_id, None)
        return Score.from_proto(reply)

    async def generate(
        self, request_id: str, prompt: str, params: SamplingParams, draft: str = "",
        answer_so_far: str = "",
    ) -> AsyncIterator[Piece]:  # fmt: skip
        async with self._slots:
            self._check_open()
            request = pb.GenerateRequest(  # before the stream is registered: it may raise
                request_id=request_id, prompt=prompt, sampling=params.to_proto(), draft=draft,
                answer_so_far=answer_so_far,
            )  # fmt: skip
            chunks: asyncio.Queue[pb.GenerateChunk | Exception] = asyncio.Queue()
            self._streams[request_id] = chunks
            finished = False
            try:
                self._send(pb.HubMessage(generate=request))
                while True:
                    chunk = await chunks.get()
                    if isinstance(chunk, Exception):
                        raise chunk
                    finished = chunk.done
                    yield Piece.from_proto(chunk)
                    if finished:
                        return
            finally:
                self._streams.pop(request_id, None)
                if not finished:
                    self._cancel(request_id)

    async def fetch_model(
        self, request_id: str, version: str, words_sha256: str = ""
    ) -> AsyncIterator[pb.ModelPart]:
        """The model folder that signed as `version` (or with `words_sha256`, the word counts
        of that digest), in parts, for the auditor; raises what the node reported (NodeFailed)
        or ConnectionError if it left. It takes no capacity slot: it is file reading, not model
        compute."""
        self._check_open()
        parts: asyncio.Queue[pb.ModelPart | Exception] = asyncio.Queue()
        self._fetches[request_id] = parts
        fetch = pb.FetchModel(request_id=request_id, model_version=version,
                              words_sha256=words_sha256)  # fmt: skip
        self._send(pb.HubMessage(fetch=fetch))
        try:
            while True:
                part = await parts.get()
                if isinstance(part, Exception):
                    raise part
                yield part
                if part.last:
                    return
        finally:
            self._fetches.pop(request_id, None)

    # --- the stream's side -------------------------------------------------------------

    def deliver(self, message: pb.NodeMessage) -> None:
        """A message read from the node's stream, after admission."""
        self.last_heard = time.monotonic()
        kind = message.WhichOneof("body")
        if kind == "heartbeat":
            self.in_flight = message.heartbeat.in_flight
            if 0 < len(message.heartbeat.model_version) <= MAX_VERSION_CHARS:  # as hello requires
                self.model_version = message.heartbeat.model_version
        elif kind == "score":
            future = self._scores.get(message.score.request_id)
            if future is not None and not future.done():
                future.set_result(message.score)
        elif kind == "chunk":
            chunks = self._streams.get(message.chunk.request_id)
            if chunks is not None:
                chunks.put_nowait(message.chunk)
        elif kind == "model_part":
            parts = self._fetches.get(message.model_part.request_id)
            if parts is not None:
                parts.put_nowait(message.model_part)
        elif kind == "failed":
            failure = NodeFailed(
                _printable(message.failed.message) or "the node failed the request"
            )
            future = self._scores.get(message.failed.request_id)
            if future is not None and not future.done():
                future.set_exception(failure)
            for waiting in (self._streams, self._fetches):
                queue = waiting.get(message.failed.request_id)
                if queue is not None:
                    queue.put_nowait(failure)

    async def outgoing(self, dead_after_s: float) -> AsyncIterator[pb.HubMessage]:
        """Messages for the node until the connection closes, or until the node has been
        silent (no heartbeat, no reply) for `dead_after_s`: a hung node is dropped, not
        waited on."""
        while self.closed is None:
            silent = time.monotonic() - self.last_heard
            try:
                message = await asyncio.wait_for(
                    self._outgoing.get(), max(0.05, dead_after_s - silent)
                )
            except TimeoutError:
                if time.monotonic() - self.last_heard >= dead_after_s:
                    self.close(f"silent for {dead_after_s:.0f} s")
                continue
            if message is None:
                return
            yield message

    def close(self, reason: str, status: str = "UNAVAILABLE") -> None:
        """Fail every waiting call; idempotent. `status` is what the node is told (a revoked
        node: PERMISSION_DENIED, so it stops dialling)."""
        if self.closed is not None:
            return
        self.closed, self.status = reason, status
        error = ConnectionError(f"node {self.node_id} disconnected: {reason}")
        for future in self._scores.values():
            if not future.done():
                future.set_exception(error)
        for queue in [*self._streams.values(), *self._fetches.values()]:
            queue.put_nowait(error)
        while self._outgoing.full():  # what it never read is dropped; the stream ends
            self._outgoing.get_nowait()
        self._outgoing.put_nowait(None)

    def _check_open(self) -> None:
        if self.closed is not None:
            raise ConnectionError(f"node {self.node_id} disconnected: {self.closed}")

    def _send(self, message: pb.HubMessage) -> None:
        try:
            self._outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.close(f"it left {self._outgoing.maxsize} requests unread")
            self._check_open()

    def _cancel(self, request_id: str) -> None:
        if self.closed is None:
            with contextlib.suppress(ConnectionError):  # a full queue closed it: nothing to stop
                self._send(pb.HubMessage(cancel=pb.Cancel(request_id=request_id)))
