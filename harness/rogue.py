"""A hostile node, for the tests that try an exploit against a real hub: the real handshake with
a real key and join token, then scores and completions of its own choosing, each signed with
its own key so that only the hub's checks stand between its claims and the ledger.

It runs its stream on an event loop in a thread of its own, so a synchronous test drives it
beside a `slm-hub serve` process like any other client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from node.identity import generate_key, public_openssh
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.signing import (
    Centred,
    centroid_sha256,
    challenge_bytes,
    completion_bytes,
    generation_input,
    node_id,
    score_bytes,
    sign,
)
from slm.model_folder import REQUIRED
from slm.profile import PROFILE_DIM
from slm.word_counts import FILE as WORDS

VERSION = "0123456789abcdef"


@dataclass
class Behaviour:
    """What the rogue says. Defaults are an honest-looking node of a mediocre model."""

    loglik: Callable[[str], float] = lambda prompt: -2.0 * len(prompt.encode("utf-8"))
    bits_per_byte: Callable[[str, float], float] | None = None  # None: consistent with loglik
    confidence: float = 0.5
    pieces: tuple[str, ...] = ("lorem ", "ipsum ", "dolor ")
    counts: tuple[int, ...] | None = None  # running count per piece; None: 1, 2, 3 ...
    final_count: int | None = None  # the signed count; None: the last running count
    fail_after: int | None = None  # pieces sent, then a RequestFailed instead of the end
    model: Path | None = None  # a model folder it sends the hub's auditor (None: it refuses)
    version: str = VERSION  # the model version it signs with
    served: list[str] = field(default_factory=list)  # request ids it was asked to generate
    similarity: Callable[[str], float] = lambda prompt: 0.0  # to its centroid, if it has one
    centroid: tuple[float, ...] = ()  # the one its Hello commits to
    offset_loglik: float = -1.0  # nats per byte it claims on the calibration pool
    offset_similarity: float = 0.0
    role: str = "domain"  # or "generalist": it drafts
    refines: bool = False  # it says it can refine a draft
    words: bytes = b""  # the word counts it commits to (slm.word_counts); empty: none
    words_loglik: Callable[[str], float] = lambda prompt: 0.0  # of a prompt's words, it says
    offset_words: float = 0.0
    sends_words: bytes | None = None  # what it sends the auditor for its counts (None: `words`)


class Rogue:
    def __init__(
        self, address: str, ca: bytes, token: str, domain: str, behaviour: Behaviour,
        profile: list[float] | None = None, key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:  # fmt: skip
        self.address, self.ca, self.token, self.domain = address, ca, token, domain
        self.behaviour = behaviour
        self.profile = profile or [1.0] + [0.0] * (PROFILE_DIM - 1)
        self.key = key or generate_key()  # a known key: the same node, joining again
        self.public = public_openssh(self.key).decode()
        self.node_id = node_id(self.public)
        self.ended: grpc.StatusCode | None = None  # how the hub ended the stream, if it did
        self._welcomed = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),),
                                        daemon=True)  # fmt: skip

    def start(self, timeout: float = 20.0) -> Rogue:
        """Join; returns once the hub welcomed it (raises what refused it)."""
        self._thread.start()
        if not self._welcomed.wait(timeout) or self._error is not None:
            raise ConnectionError(f"the rogue node was not welcomed: {self._error}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        credentials = grpc.ssl_channel_credentials(self.ca)
        try:
            async with grpc.aio.secure_channel(self.address, credentials) as channel:
                call = rpc.NodeLinkStub(channel).Connect()
                interval = await self._handshake(call)
                self._welcomed.set()
                beats = asyncio.create_task(self._heartbeats(call, interval))
                try:
                    await self._serve(call)
                finally:
                    beats.cancel()
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code()
            self._error = exc
        except BaseException as exc:  # surfaced by start()
            self._error = exc
        finally:
            self._welcomed.set()

    async def _handshake(self, call) -> float:  # type: ignore[no-untyped-def]
        await call.write(pb.NodeMessage(hello=pb.Hello(
            public_key=self.public, join_token=self.token, domain=self.domain,
            profile=self.profile, model_version=self.behaviour.version, capacity=4,
            preset="rogue", centroid=list(self.behaviour.centroid), role=self.behaviour.role,
            refines=self.behaviour.refines, words_sha256=self._words_sha256(),
        )))  # fmt: skip
        challenge = await call.read()
        proof = sign(self.key, challenge_bytes(challenge.challenge.nonce, self.public))
        await call.write(pb.NodeMessage(proof=pb.Proof(signature=proof)))
        welcome = await call.read()
        if welcome is grpc.aio.EOF or welcome.WhichOneof("body") != "welcome":
            raise ConnectionError(await call.details())
        return welcome.welcome.heartbeat_interval_ms / 1000

    async def _heartbeats(self, call, interval: float) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(Exception):
            while True:
                await call.write(pb.NodeMessage(heartbeat=pb.Heartbeat(in_flight=0)))
                await asyncio.sleep(interval * 0.5)

    async def _serve(self, call) -> None:  # type: ignore[no-untyped-def]
        assert self._stop is not None
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while True:
                reading = asyncio.create_task(call.read())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stopping.done():
                    reading.cancel()
                    call.cancel()
                    return
                message = reading.result()
                if message is grpc.aio.EOF:
                    self.ended = await call.code()
                    return
                kind = message.WhichOneof("body")
                if kind == "score":
                    await call.write(pb.NodeMessage(score=self._score(message.score)))
                elif kind == "generate":
                    for reply in self._generate(message.generate):
                        await call.write(reply)
                elif kind == "fetch":
                    for reply in self._model(message.fetch):
                        await call.write(reply)
        finally:
            stopping.cancel()

    def _words_sha256(self) -> str:
        return hashlib.sha256(self.behaviour.words).hexdigest() if self.behaviour.words else ""

    def _model(self, request: pb.FetchModel) -> list[pb.NodeMessage]:
        folder, rid = self.behaviour.model, request.request_id
        if request.words_sha256:
            b = self.behaviour
            data = b.words if b.sends_words is None else b.sends_words
            part = pb.ModelPart(request_id=rid, name=WORDS, data=data, last=True)
            return [pb.NodeMessage(model_part=part)]
        if folder is None:
            failed = pb.RequestFailed(request_id=rid, message="the rogue keeps its model")
            return [pb.NodeMessage(failed=failed)]
        names = REQUIRED
        return [
            pb.NodeMessage(model_part=pb.ModelPart(
                request_id=rid, name=name, data=(folder / name).read_bytes(),
                last=name == names[-1],
            ))
            for name in names
        ]  # fmt: skip

    def _score(self, request: pb.ScoreRequest) -> pb.ScoreReply:
        b = self.behaviour
        loglik = b.loglik(request.prompt)
        size = len(request.prompt.encode("utf-8"))
        bpb = b.bits_per_byte(request.prompt, loglik) if b.bits_per_byte else (
            -loglik / (size * math.log(2))
        )  # fmt: skip
        centred = Centred(b.similarity(request.prompt), b.offset_loglik, b.offset_similarity,
                          centroid_sha256(b.centroid), b.words_loglik(request.prompt),
                          b.offset_words, self._words_sha256())  # fmt: skip
        statement = score_bytes(self.node_id, request.request_id, request.prompt, loglik, bpb,
                                b.confidence, False, b.version, centred)  # fmt: skip
        return pb.ScoreReply(
            request_id=request.request_id, loglik=loglik, bits_per_byte=bpb,
            confidence=b.confidence, signature=sign(self.key, statement), model_version=b.version,
            similarity=centred.similarity, offset_loglik=centred.offset_loglik,
            offset_similarity=centred.offset_similarity, words_loglik=centred.words_loglik,
            offset_words=centred.offset_words,
        )  # fmt: skip

    def _generate(self, request: pb.GenerateRequest) -> list[pb.NodeMessage]:
        b = self.behaviour
        b.served.append(request.request_id)
        rid, out, count = request.request_id, [], 0
        for i, text in enumerate(b.pieces):
            if b.fail_after is not None and i >= b.fail_after:
                failed = pb.RequestFailed(request_id=rid, message="the rogue gives up")
                return [*out, pb.NodeMessage(failed=failed)]
            count = b.counts[i] if b.counts else i + 1
            out.append(pb.NodeMessage(chunk=pb.GenerateChunk(request_id=rid, text=text,
                                                             tokens=count)))  # fmt: skip
        final = count if b.final_count is None else b.final_count
        said = generation_input(request.prompt, request.draft, request.answer_so_far)
        statement = completion_bytes(self.node_id, rid, said, "".join(b.pieces), final,
                                     b.version)  # fmt: skip
        done = pb.GenerateChunk(request_id=rid, tokens=final, done=True, model_version=b.version,
                                signature=sign(self.key, statement))  # fmt: skip
        return [*out, pb.NodeMessage(chunk=done)]
