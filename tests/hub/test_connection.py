"""One node's stream as the hub sees it (hub/routing/connection.py), without a network: requests
multiplexed by id, at most `capacity` at once, cancellation, a failed or silent node, and what a
hostile node's replies can and cannot do. A fake node answers on the other end of the queues."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import pytest

from hub.routing.connection import NodeConnection, NodeFailed
from protos import swarm_pb2 as pb
from protos.wire import SamplingParams

PARAMS = SamplingParams(max_tokens=8, temperature=0)


def connection(capacity: int = 1) -> NodeConnection:
    return NodeConnection("n" * 32, "law", "ssh-key", "0123456789abcdef", capacity)


async def sent(conn: NodeConnection, n: int, dead_after_s: float = 5.0) -> list[pb.HubMessage]:
    """The next `n` messages the hub sends to the node."""
    out = []
    async for message in conn.outgoing(dead_after_s):
        out.append(message)
        if len(out) == n:
            break
    return out


def score_reply(request_id: str, loglik: float = -10.0) -> pb.NodeMessage:
    return pb.NodeMessage(score=pb.ScoreReply(request_id=request_id, loglik=loglik))


def asynchronous(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test on its own event loop, failing it after 10 s."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 10))

    return run


@asynchronous
async def test_replies_reach_the_request_they_answer_whatever_their_order() -> None:
    conn = connection(capacity=2)
    first = asyncio.create_task(conn.score("a", "prompt a", 2.0))
    second = asyncio.create_task(conn.score("b", "prompt b", 2.0))
    requests = await sent(conn, 2)
    assert sorted(m.score.request_id for m in requests) == ["a", "b"]
    conn.deliver(score_reply("b", -2.0))
    conn.deliver(score_reply("a", -1.0))
    conn.deliver(score_reply("nobody-asked", -0.0))  # a reply to no request: ignored
    assert (await first).loglik == -1.0 and (await second).loglik == -2.0


@asynchronous
async def test_at_most_capacity_requests_are_outstanding_the_rest_wait() -> None:
    conn = connection(capacity=1)
    first = asyncio.create_task(conn.score("a", "x", 2.0))
    second = asyncio.create_task(conn.score("b", "y", 2.0))
    (request,) = await sent(conn, 1)
    with pytest.raises(TimeoutError):  # "b" waits for a slot, not on the node's queue
        await asyncio.wait_for(sent(conn, 1), 0.2)
    conn.deliver(score_reply(request.score.request_id))
    (request,) = await sent(conn, 1)
    assert request.score.request_id == "b"
    conn.deliver(score_reply("b"))
    await asyncio.gather(first, second)


@asynchronous
async def test_a_score_given_up_on_is_cancelled_at_the_node() -> None:
    conn = connection()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.score("late", "x", 0.05), 0.05)
    messages = await sent(conn, 2)
    assert [m.WhichOneof("body") for m in messages] == ["score", "cancel"]
    assert messages[1].cancel.request_id == "late"


@asynchronous
async def test_a_generation_closed_before_its_end_is_cancelled_and_frees_its_slot() -> None:
    conn = connection()
    stream = conn.generate("g", "prompt", PARAMS)
    next_piece = asyncio.create_task(stream.__anext__())
    (request,) = await sent(conn, 1)
    assert request.generate.sampling.max_tokens == 8  # the params travel as one message
    conn.deliver(pb.NodeMessage(chunk=pb.GenerateChunk(request_id="g", text="Hi", tokens=1)))
    assert (await next_piece).text == "Hi"
    await stream.aclose()  # the client hung up
    (cancel,) = await sent(conn, 1)
    assert cancel.cancel.request_id == "g"
    scoring = asyncio.create_task(conn.score("s", "x", 2.0))  # the slot is free again
    (request,) = await sent(conn, 1)
    conn.deliver(score_reply("s"))
    assert (await scoring).request_id == "s"


@asynchronous
async def test_a_node_that_reports_failure_fails_that_request_only() -> None:
    conn = connection(capacity=2)
    failing = asyncio.create_task(conn.score("bad", "x", 2.0))
    fine = asyncio.create_task(conn.score("good", "y", 2.0))
    await sent(conn, 2)
    failed = pb.RequestFailed(request_id="bad", message="model exploded")
    conn.deliver(pb.NodeMessage(failed=failed))
    conn.deliver(score_reply("good"))
    with pytest.raises(NodeFailed, match="model exploded"):
        await failing
    assert (await fine).request_id == "good" and conn.closed is None


@asynchronous
async def test_a_closed_stream_fails_every_waiter_at_once() -> None:
    conn = connection(capacity=2)
    scoring = asyncio.create_task(conn.score("s", "x", 2.0))
    stream = conn.generate("g", "prompt", PARAMS)
    piece = asyncio.create_task(stream.__anext__())
    await sent(conn, 2)
    conn.close("stream error: reset by peer")
    for waiter in (scoring, piece):
        with pytest.raises(ConnectionError, match="reset by peer"):
            await waiter
    with pytest.raises(ConnectionError, match="disconnected"):
        await conn.score("after", "x", 2.0)


@asynchronous
async def test_a_silent_node_is_dropped_and_its_waiters_fail() -> None:
    conn = connection()
    scoring = asyncio.create_task(conn.score("s", "x", 5.0))
    assert len(await sent(conn, 1, dead_after_s=0.3)) == 1
    assert await sent(conn, 1, dead_after_s=0.3) == []  # nothing more: the node went quiet
    assert (conn.closed or "").startswith("silent for")
    with pytest.raises(ConnectionError, match="silent"):
        await scoring


@asynchronous
async def test_heartbeats_keep_a_node_alive_and_report_its_state() -> None:
    conn = connection()

    async def beat() -> None:
        for _ in range(8):
            await asyncio.sleep(0.05)
            conn.deliver(pb.NodeMessage(heartbeat=pb.Heartbeat(in_flight=1, model_version="v2")))
        conn.close("done")

    beating = asyncio.create_task(beat())
    assert await sent(conn, 1, dead_after_s=0.2) == []  # 0.4 s of beats outlive 0.2 s
    await beating
    assert conn.closed == "done" and conn.in_flight == 1 and conn.model_version == "v2"
    too_long = pb.Heartbeat(in_flight=0, model_version="v" * 65)
    conn.deliver(pb.NodeMessage(heartbeat=too_long))
    assert conn.model_version == "v2"  # a version hello would refuse is not taken


@asynchronous
async def test_a_node_that_stops_reading_is_closed_not_fed_forever() -> None:
    conn = connection(capacity=1)
    room = conn._outgoing.maxsize
    for i in range(room):  # cancels of requests it never read: nothing takes them off
        conn._cancel(f"r{i}")
    assert conn.closed is None
    conn._cancel("one-too-many")
    assert conn.closed is not None and "unread" in conn.closed
    with pytest.raises(ConnectionError):
        await conn.score("late", "prompt", 1.0)
