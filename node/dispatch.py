"""Serving the hub's requests on a node: what `slm-node join` does with each message after the
handshake, apart from the dialling.

Every score and generate request runs in a worker thread (at most `capacity` at once), so model
compute never blocks the stream; replies go back through `send` on the event loop. A `Cancel`
is honoured between pieces of a completion; a score that waited for a worker past its deadline
is refused rather than computed late; a draining node refuses new work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from node.service import NodeService
from protos import swarm_pb2 as pb
from protos.wire import SamplingParams

Send = Callable[[pb.NodeMessage], None]  # on the event loop: queue a message for the hub


class Dispatcher:
    def __init__(self, service: NodeService, capacity: int, log: Callable[[str], None]) -> None:
        self.service = service
        self.log = log
        self.pool = ThreadPoolExecutor(capacity, thread_name_prefix="node-worker")
        self.in_flight = 0  # requests being worked on, for heartbeats and draining
        self.draining = asyncio.Event()  # set: refuse new work (the agent is leaving)
        self._active: Counter[str] = Counter()  # request ids being worked on (score, generate)
        self._cancelled: set[str] = set()  # the subset the hub cancelled
        self._lock = threading.Lock()

    def handle(self, message: pb.HubMessage, send: Send) -> None:
        """One message from the hub, on the event loop: start its work, or note a cancel."""
        kind = message.WhichOneof("body")
        if kind == "cancel":
            with self._lock:
                if message.cancel.request_id in self._active:
                    self._cancelled.add(message.cancel.request_id)
            return
        if kind not in ("score", "generate", "fetch"):
            return
        request = getattr(message, kind)
        if self.draining.is_set():
            send(_failed(request.request_id, "the node is shutting down"))
            return
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        with self._lock:
            self._active[request.request_id] += 1
        work = {"score": self._score, "generate": self._generate, "fetch": self._fetch}[kind]

        def emit(reply: pb.NodeMessage) -> None:  # from the worker thread
            loop.call_soon_threadsafe(send, reply)

        future = loop.run_in_executor(self.pool, work, request, emit, time.monotonic())
        future.add_done_callback(lambda _: self._done(request.request_id))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _done(self, request_id: str) -> None:
        self.in_flight -= 1
        with self._lock:
            self._active[request_id] -= 1
            if not self._active[request_id]:
                del self._active[request_id]
                self._cancelled.discard(request_id)

    def _take_cancel(self, request_id: str) -> bool:
        with self._lock:
            if request_id in self._cancelled:
                self._cancelled.discard(request_id)
                return True
        return False

    def _score(self, request: pb.ScoreRequest, emit: Send, received: float) -> None:
        rid = request.request_id
        waited_ms = (time.monotonic() - received) * 1000
        late = bool(request.deadline_ms) and waited_ms > request.deadline_ms
        if late or self._take_cancel(rid):
            emit(_failed(rid, f"too late: waited {waited_ms:.0f} ms for a worker"))
            return
        try:
            s = self.service.score(rid, request.prompt)
        except Exception as exc:  # a bad prompt for this model; the hub skips this node
            emit(_failed(rid, f"score failed: {exc}"))
            return
        took = (time.monotonic() - received) * 1000
        emit(pb.NodeMessage(score=replace(s, node_ms=took).to_proto()))
        self.log(f"score    {rid[:8]}  {took:6.0f} ms  confidence {s.confidence:.3f}"
                 + ("  (declined)" if s.declined else ""))  # fmt: skip

    def _fetch(self, request: pb.FetchModel, emit: Send, received: float) -> None:
        """The hub's auditor wants the model, or the word counts, that signed some claims of
        ours."""
        what = (f"word counts {request.words_sha256[:16]}" if request.words_sha256
                else f"model {request.model_version}")  # fmt: skip
        try:
            _send_model(self.service, request, emit)
        except Exception as exc:  # a swapped model, a folder gone: the hub hears why
            emit(_failed(request.request_id, f"cannot send {what}: {exc}"))
            return
        self.log(f"fetch    {request.request_id[:8]}  {what} sent to the hub's auditor")

    def _generate(self, request: pb.GenerateRequest, emit: Send, received: float) -> None:
        rid = request.request_id
        tokens = 0
        try:
            params = SamplingParams.from_proto(request.sampling)
            pieces = self.service.generate(rid, request.prompt, params, request.draft,
                                           request.answer_so_far)  # fmt: skip
            for piece in pieces:
                if self._take_cancel(rid):
                    self.log(f"generate {rid[:8]}  cancelled by the hub after {tokens} tokens")
                    return
                tokens = piece.tokens
                if piece.done:
                    piece = replace(piece, node_ms=(time.monotonic() - received) * 1000)
                emit(pb.NodeMessage(chunk=piece.to_proto()))
        except Exception as exc:
            emit(_failed(rid, f"generate failed: {exc}"))
            return
        took = (time.monotonic() - received) * 1000
        self.log(f"generate {rid[:8]}  {took:6.0f} ms  {tokens} tokens")


def _send_model(service: NodeService, request: pb.FetchModel, emit: Send) -> None:
    for name, data, last in service.model_files(request.model_version, request.words_sha256):
        part = pb.ModelPart(request_id=request.request_id, name=name, data=data, last=last)
        emit(pb.NodeMessage(model_part=part))


def _failed(request_id: str, text: str) -> pb.NodeMessage:
    return pb.NodeMessage(failed=pb.RequestFailed(request_id=request_id, message=text))
