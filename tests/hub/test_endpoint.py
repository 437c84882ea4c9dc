"""The operator's generalist endpoint, as a hostile or broken server would answer it: the hub
reads at most max_tokens x 128 bytes of a draft, pays no more tokens than it could hold, and
turns an error or an empty answer into EndpointError (so generalist nodes draft instead)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hub.routing.claims import MAX_TOKEN_BYTES
from hub.routing.endpoint import EndpointConfig, EndpointDrafter, EndpointError
from protos.wire import SamplingParams
from slm.errors import SLMError


def _events(pieces: list[str], usage: int | None) -> bytes:
    out = [{"choices": [{"delta": {"content": p}}]} for p in pieces]
    if usage is not None:
        out.append({"choices": [], "usage": {"completion_tokens": usage}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in out) + b"data: [DONE]\n\n"


@pytest.fixture
def server() -> Iterator[tuple[str, dict]]:
    """A local server speaking the streamed chat API; `reply` says what it answers next."""
    reply: dict = {"status": 200, "body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(reply["status"])
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            self.wfile.write(reply["body"])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", reply
    httpd.shutdown()


def _draft(url: str, cap: int) -> tuple[str, int]:
    drafter = EndpointDrafter(EndpointConfig(url, "big-model"))

    async def go() -> tuple[str, int]:
        try:
            return await drafter.draft("What is otitis media?", SamplingParams(max_tokens=cap))
        finally:
            await drafter.close()

    return asyncio.run(go())


def test_a_draft_is_paid_the_fewest_of_its_reported_tokens_pieces_and_bytes(server) -> None:
    url, reply = server
    reply["body"] = _events(["An ", "infection ", "of ", "the ", "middle ", "ear."], usage=5)
    assert _draft(url, 16) == ("An infection of the middle ear.", 5)
    reply["body"] = _events(["An infection ", "of the middle ear."], usage=7)
    assert _draft(url, 16) == ("An infection of the middle ear.", 2)


def test_an_endless_draft_is_cut_and_a_claimed_billion_tokens_is_not_paid(server) -> None:
    url, reply = server
    reply["body"] = _events(["word " * 1000] * 50, usage=10**9)
    text, tokens = _draft(url, 4)
    assert len(text.encode()) <= 4 * MAX_TOKEN_BYTES and tokens <= 4


def test_an_error_or_an_empty_answer_is_no_draft(server) -> None:
    url, reply = server
    reply.update(status=500, body=b"oops")
    with pytest.raises(EndpointError, match="HTTP 500"):
        _draft(url, 4)
    reply.update(status=200, body=_events(["   "], usage=1) + b"data: {not json\n\n")
    with pytest.raises(EndpointError, match="no draft"):
        _draft(url, 4)


def test_prompts_cross_the_network_only_encrypted() -> None:
    with pytest.raises(SLMError, match="must be https"):
        EndpointConfig("http://llm.example.org/v1", "m")
