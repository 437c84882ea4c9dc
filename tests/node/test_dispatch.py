"""A node's dispatcher (node/dispatch.py) without a network: the hub's messages go in, the node's
replies come out. Signed answers come from a real NodeService on a trained tiny model; timing
(cancellation, a score that waited past its deadline) from a service whose work the test holds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from node.dispatch import Dispatcher
from node.identity import generate_key
from node.service import NodeService
from protos import swarm_pb2 as pb
from protos.signing import completion_bytes, score_bytes, verify
from protos.wire import Piece, SamplingParams, Score

GREEDY = SamplingParams(max_tokens=12, temperature=0).to_proto()


def score_request(request_id: str, prompt: str = "Otitis media", deadline_ms: int = 0):  # type: ignore[no-untyped-def]
    request = pb.ScoreRequest(request_id=request_id, prompt=prompt, deadline_ms=deadline_ms)
    return pb.HubMessage(score=request)


def generate_request(request_id: str, sampling: pb.SamplingParams = GREEDY) -> pb.HubMessage:
    request = pb.GenerateRequest(request_id=request_id, prompt="Acute", sampling=sampling)
    return pb.HubMessage(generate=request)


class Held:
    """A service whose scores and pieces wait until the test releases them."""

    node_id, public_key = "h" * 32, "ssh-key"

    def __init__(self) -> None:
        self.release = threading.Semaphore(0)

    def score(self, request_id: str, prompt: str) -> Score:
        self.release.acquire()
        return Score(request_id, -1.0, 1.0, 0.5, False, b"sig", "v1")

    def generate(
        self, request_id: str, prompt: str, params: SamplingParams, draft: str = "",
        answer_so_far: str = "",
    ) -> Iterator[Piece]:  # fmt: skip
        for i in range(1, 100):
            self.release.acquire()
            yield Piece(request_id, f"w{i} ", i, False)


async def replies(dispatcher: Dispatcher, messages: list[pb.HubMessage], until: int) -> list:
    """Hand the messages to the dispatcher; the first `until` replies it sends."""
    out: asyncio.Queue[pb.NodeMessage] = asyncio.Queue()
    for message in messages:
        dispatcher.handle(message, out.put_nowait)
    return [await asyncio.wait_for(out.get(), 30) for _ in range(until)]


def test_scores_and_completions_come_back_signed_by_the_node(trained) -> None:
    service = NodeService(trained["medicine"].load(), generate_key())
    dispatcher = Dispatcher(service, capacity=2, log=lambda _: None)

    async def test() -> list[pb.NodeMessage]:
        out: asyncio.Queue[pb.NodeMessage] = asyncio.Queue()
        dispatcher.handle(score_request("s1"), out.put_nowait)
        got = [await asyncio.wait_for(out.get(), 30)]
        dispatcher.handle(generate_request("g1"), out.put_nowait)
        while not (got[-1].WhichOneof("body") == "chunk" and got[-1].chunk.done):
            got.append(await asyncio.wait_for(out.get(), 30))
        while dispatcher.in_flight:  # the worker is done once its future has settled
            await asyncio.sleep(0.01)
        return got

    got = asyncio.run(test())
    score = got[0].score
    centred = Score.from_proto(score).centred(service.centroid_sha256, service.words_sha256)
    statement = score_bytes(service.node_id, "s1", "Otitis media", score.loglik,
                            score.bits_per_byte, score.confidence, score.declined,
                            score.model_version, centred)  # fmt: skip
    assert verify(service.public_key, score.signature, statement) and score.node_ms > 0
    chunks = [m.chunk for m in got[1:]]
    text = "".join(c.text for c in chunks)
    last = chunks[-1]
    statement = completion_bytes(service.node_id, "g1", "Acute", text, last.tokens,
                                 last.model_version)  # fmt: skip
    assert text and 0 < last.tokens <= 12 and last.node_ms > 0
    assert verify(service.public_key, last.signature, statement)


def test_a_cancelled_generation_stops_between_pieces() -> None:
    service = Held()
    dispatcher = Dispatcher(service, capacity=1, log=lambda _: None)  # type: ignore[arg-type]

    async def test() -> None:
        out: asyncio.Queue[pb.NodeMessage] = asyncio.Queue()
        service.release.release()
        dispatcher.handle(generate_request("g"), out.put_nowait)
        first = await asyncio.wait_for(out.get(), 10)
        assert first.chunk.text == "w1 " and dispatcher.in_flight == 1
        dispatcher.handle(pb.HubMessage(cancel=pb.Cancel(request_id="g")), out.put_nowait)
        service.release.release()  # the next piece is made, then the cancel is seen
        while dispatcher.in_flight:
            await asyncio.sleep(0.01)
        assert out.empty()  # no second piece, no done: the hub stopped listening
        assert dispatcher._active == {} and dispatcher._cancelled == set()

    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_score_that_waited_past_its_deadline_is_refused_not_computed() -> None:
    service = Held()
    dispatcher = Dispatcher(service, capacity=1, log=lambda _: None)  # type: ignore[arg-type]

    async def test() -> list[pb.NodeMessage]:
        busy = [score_request("busy"), score_request("late", deadline_ms=50)]
        out: asyncio.Queue[pb.NodeMessage] = asyncio.Queue()
        for message in busy:
            dispatcher.handle(message, out.put_nowait)
        await asyncio.sleep(0.2)  # "late" waits behind "busy" for the one worker
        service.release.release()
        return [await asyncio.wait_for(out.get(), 10) for _ in range(2)]

    first, second = asyncio.run(test())
    assert first.score.request_id == "busy"
    assert second.failed.request_id == "late" and "too late" in second.failed.message


def test_bad_requests_and_a_draining_node_get_a_reason_not_silence(trained) -> None:
    service = NodeService(trained["law"].load(), generate_key())
    dispatcher = Dispatcher(service, capacity=1, log=lambda _: None)
    bad_sampling = pb.SamplingParams(max_tokens=0)  # a hostile or broken hub's request

    async def test() -> list[pb.NodeMessage]:
        got = await replies(dispatcher, [generate_request("bad", bad_sampling)], 1)
        dispatcher.draining.set()
        got += await replies(dispatcher, [score_request("s")], 1)
        dispatcher.handle(pb.HubMessage(), lambda m: got.append(m))  # an empty message: ignored
        return got

    bad, refused = asyncio.run(test())
    assert bad.failed.request_id == "bad" and "max_tokens must be between" in bad.failed.message
    assert refused.failed.request_id == "s" and "shutting down" in refused.failed.message
