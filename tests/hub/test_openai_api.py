"""The OpenAI-compatible endpoint as its users meet it: the official `openai` client against a
real hub and two real nodes on 127.0.0.1 over TLS, its errors, its metrics, and a bounded fuzz
of every route from the hub's own OpenAPI schema (schemathesis)."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from harness import Hub, Node, cli
from harness.processes import stop_all

pytestmark = pytest.mark.slow  # real hub and node processes

DOMAINS = ("medicine", "law")


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("openai")
    hub = Hub(root / "hub")
    nodes = {d: Node(root / f"node-{d}", trained[d].folder, hub, hub.token(d)) for d in DOMAINS}
    hub.wait_connected([n.node_id for n in nodes.values()])
    yield hub, nodes
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def _trust(hub: Hub) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca))


def _client(hub: Hub, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=hub.base_url, api_key=key, max_retries=0,
                         http_client=openai.DefaultHttpxClient(verify=_trust(hub)))  # fmt: skip


def test_chat_and_completions_come_from_the_right_domain(network, trained) -> None:
    hub, nodes = network
    client = _client(hub, hub.new_key("app", credits="100"))
    assert {m.id for m in client.models.list()} == {"swarm/auto", "swarm/medicine", "swarm/law"}
    prompt = trained["medicine"].held_out[:200]
    raw = client.chat.completions.with_raw_response.create(
        model="swarm/auto", messages=[{"role": "user", "content": prompt}], max_tokens=6,
        temperature=0, seed=1,
    )  # fmt: skip
    chat = raw.parse()
    assert chat.model == "swarm/medicine" and chat.choices[0].message.content
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert 0 < chat.usage.completion_tokens <= 6
    assert chat.swarm["domain"] == "medicine"
    assert chat.swarm["node_id"] == nodes["medicine"].node_id
    assert chat.swarm["charged_credits"] > 0 and len(chat.swarm["candidates"]) == 2
    assert raw.headers["x-swarm-domain"] == "medicine"
    assert raw.headers["x-swarm-node"] == nodes["medicine"].node_id

    chunks = list(client.chat.completions.create(
        model="swarm/auto", messages=[{"role": "user", "content": prompt}], max_tokens=6,
        stream=True, stream_options={"include_usage": True}, temperature=0, seed=1,
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content  # greedy: the same answer, streamed
    assert chunks[0].swarm["domain"] == "medicine"
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].swarm["charged_credits"] > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == chat.usage.total_tokens

    law = client.completions.create(model="swarm/law", prompt=prompt, max_tokens=4,
                                    temperature=0)  # fmt: skip
    assert law.model == "swarm/law" and law.swarm["node_id"] == nodes["law"].node_id
    assert law.choices[0].text and law.usage.completion_tokens <= 4
    streamed = list(client.completions.create(model="swarm/law", prompt=prompt, max_tokens=4,
                                              temperature=0, stream=True))  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed if c.choices) == law.choices[0].text


def test_errors_are_the_ones_openai_clients_expect(network) -> None:
    hub, _ = network
    messages = [{"role": "user", "content": "Thou shalt"}]
    with pytest.raises(openai.AuthenticationError) as bad:
        _client(hub, "sk-not-ours").chat.completions.create(model="swarm/auto", messages=messages)
    assert bad.value.status_code == 401
    poor = _client(hub, hub.new_key("broke", credits="0.5"))
    with pytest.raises(openai.RateLimitError) as broke:
        poor.chat.completions.create(model="swarm/auto", messages=messages, max_tokens=2)
    assert broke.value.code == "insufficient_quota"
    slow = _client(hub, hub.new_key("slowapp", credits="100", rate=1))
    slow.completions.create(model="swarm/auto", prompt="Thou shalt", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as limited:
        slow.completions.create(model="swarm/auto", prompt="Thou shalt", max_tokens=1)
    assert limited.value.code == "rate_limit_exceeded"
    client = _client(hub, hub.key)
    invalid = [
        {"n": 2}, {"temperature": 9}, {"max_tokens": 0}, {"stop": ["a", "b", "c", "d", "e"]},
        {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"logprobs": True},
        {"model": "gpt-4o"}, {"messages": []}, {"messages": [{"role": "tool", "content": "x"}]},
        {"stop": ["s" * 65]}, {"stop": ["stop"] * 640_000},
    ]  # fmt: skip
    for change in invalid:
        request = {"model": "swarm/auto", "messages": messages, **change}
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**request)
        assert refused.value.body and refused.value.body["message"], change
    listed = hub.nodes()
    assert all(n.connected for n in listed.values())  # the bombs reached no node


def test_metrics_count_asks_refusals_and_latency(network) -> None:
    hub, _ = network
    client = _client(hub, hub.key)
    client.completions.create(model="swarm/auto", prompt="The licensee", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="swarm/auto", prompt="The", n=2)
    with pytest.raises(openai.RateLimitError):
        _client(hub, hub.new_key("unfunded")).completions.create(model="swarm/auto", prompt="x")
    text = httpx.get(f"https://127.0.0.1:{hub.http_port}/metrics", verify=_trust(hub)).text
    for line in (
        'swarm_asks_total{outcome="success"}',
        "swarm_ask_duration_seconds_count",
        "swarm_time_to_first_token_seconds_bucket",
        "swarm_completion_tokens_total",
        'swarm_rejected_requests_total{reason="invalid_argument"}',
        'swarm_rejected_requests_total{reason="insufficient_quota"}',
        "swarm_ledger_write_seconds_count",
        'swarm_node_in_flight{domain="law"',
    ):
        assert line in text, line


def test_the_api_fuzzed_from_its_own_schema_never_fails_inside(network) -> None:
    hub, nodes = network
    key = hub.new_key("fuzz")  # no credits: every valid Ask is refused before routing
    db = sqlite3.connect(hub.home / "hub.db")
    before = db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    spec = httpx.get(f"https://127.0.0.1:{hub.http_port}/openapi.json", verify=_trust(hub))
    schema = schemathesis.openapi.from_dict(json.loads(spec.text))
    base = f"https://127.0.0.1:{hub.http_port}"
    statuses: set[int] = set()
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=op.as_strategy())
        def call(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=base, headers={"authorization": f"Bearer {key}"},
                                 verify=str(hub.ca), timeout=30)  # fmt: skip
            statuses.add(response.status_code)
            assert response.status_code < 500, (case, response.text)
            if response.status_code >= 400:
                assert "message" in response.json()["error"]

        call()
    assert statuses & {400, 429}  # it reached validation and the gate
    assert all(n.proc.poll() is None for n in nodes.values()) and hub.proc.poll() is None
    after = db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    assert after == before  # nothing written for a refused request


def test_a_client_that_hangs_up_pays_for_what_it_received(network, trained) -> None:
    hub, _ = network
    client = _client(hub, hub.new_key("leaver", credits="100", max_concurrent=1))
    stream = client.completions.create(
        model="swarm/law",
        prompt=trained["law"].held_out[:200],
        max_tokens=1000,
        temperature=0.8,
        seed=2,
        stream=True,
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].text if chunk.choices else ""
        if len(received) > 20:
            break
    stream.close()  # hang up mid-answer
    db = sqlite3.connect(hub.home / "hub.db")
    row = None
    for _ in range(100):
        row = db.execute("SELECT outcome, tokens FROM inferences WHERE request_id = ?",
                         (stream.response.headers["x-swarm-request-id"],)).fetchone()  # fmt: skip
        if row:
            break
        time.sleep(0.1)
    assert row is not None and row[0] == "partial" and 0 < row[1] < 1000
    balance = cli("slm-hub", "ledger", "balance", "leaver", "--json", "--home", str(hub.home))
    assert float(next(iter(json.loads(balance.stdout).values()))) < 100
    again = client.completions.create(model="swarm/law", prompt="The", max_tokens=2)
    assert again.choices[0].text is not None  # its one place at once was given back


def test_a_failure_after_the_stream_began_is_an_error_event(network, trained) -> None:
    hub, nodes = network  # last in this file: it kills the law node
    client = _client(hub, hub.key)
    stream = client.completions.create(
        model="swarm/law",
        prompt=trained["law"].held_out[:200],
        max_tokens=2000,
        temperature=0.8,
        seed=5,
        stream=True,
    )
    received = ""
    with pytest.raises(openai.APIError) as failed:
        for chunk in stream:
            received += chunk.choices[0].text if chunk.choices else ""
            if received and nodes["law"].proc.poll() is None:
                nodes["law"].proc.kill()  # mid-answer, with no other law node to continue
    assert received and "no other node can continue" in str(failed.value.message)
