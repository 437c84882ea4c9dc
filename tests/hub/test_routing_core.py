"""The routing plane's plain parts: candidate index, posterior, node registry (both databases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hub.routing.admission import MAX_CAPACITY
from hub.routing.candidates import ProfileIndex
from hub.routing.posterior import evidence, posterior, ranked
from hub.storage.engine import make_engine, upgrade
from hub.storage.registry import MAX_ADDRESS_CHARS, NodeRegistry
from protos.wire import MAX_PRESET_CHARS, MAX_VERSION_CHARS
from slm.errors import SLMError
from slm.profile import PROFILE_DIM, corpus_profile, embed
from tests.conftest import held_out_split


def test_the_index_finds_the_domain_of_held_out_text_among_many_nodes() -> None:
    index = ProfileIndex(capacity=4)
    rng = np.random.default_rng(0)
    for i in range(300):  # distractors with random profiles, forcing the index to grow
        index.put(f"noise-{i}", rng.standard_normal(PROFILE_DIM).astype(np.float32))
    for domain in ("medicine", "law", "religion"):
        index.put(domain, corpus_profile(held_out_split(domain)[0]))
    for domain in ("medicine", "law", "religion"):
        top = index.top(embed(held_out_split(domain)[1][:600]), 8)
        assert top[0][0] == domain and len(top) == 8
        assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)


def test_the_index_matches_a_dense_search_and_survives_removal() -> None:
    rng = np.random.default_rng(1)
    index = ProfileIndex()
    vectors = {f"n{i}": rng.standard_normal(PROFILE_DIM).astype(np.float32) for i in range(50)}
    for node, v in vectors.items():
        index.put(node, v)
    index.remove("n3")
    index.remove("n49")
    assert len(index) == 48 and "n3" not in index
    query = embed("the licensee shall indemnify the licensor against claims")
    dense = sorted(
        (
            (n, float(query @ (v / np.linalg.norm(v))))
            for n, v in vectors.items()
            if n not in ("n3", "n49")
        ),
        key=lambda kv: -kv[1],
    )[:5]
    got = index.top(query, 5)
    assert [n for n, _ in got] == [n for n, _ in dense]
    assert all(math.isclose(a, b, rel_tol=1e-4) for (_, a), (_, b) in zip(got, dense, strict=True))
    assert len(index.top(query, 100)) == 48
    with pytest.raises(ValueError):
        index.put("bad", np.full(PROFILE_DIM, np.nan))


def test_the_posterior_follows_loglik_and_prior() -> None:
    # Logliks hundreds of nats apart must not overflow; a 1-nat gap is a factor e.
    p = posterior({"a": -400.0, "b": -401.0, "c": -900.0}, {})
    assert math.isclose(p["a"] / p["b"], math.e) and p["c"] < 1e-100
    assert math.isclose(sum(p.values()), 1.0)
    halved = posterior({"a": -400.0, "b": -401.0}, {"a": 0.5})
    assert math.isclose(halved["a"] / halved["b"], math.e / 2)
    assert "z" not in posterior({"a": -1.0, "z": float("nan")}, {})
    assert ranked({"b": 0.5, "a": 0.5, "c": 0.1}) == [("a", 0.5), ("b", 0.5), ("c", 0.1)]
    flat = posterior({"a": -10.0, "b": -20.0}, {}, temperature=10.0)
    assert math.isclose(flat["a"] / flat["b"], math.e)


@pytest.fixture
def registry(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    yield NodeRegistry(engine)
    engine.dispose()


def test_the_registry_keeps_nodes_across_restarts(registry, db_url: str) -> None:
    registry.admit("n1", "ecdsa-sha2-nistp384 AAAA", "law", "slm-tiny", "127.0.0.1:5001", "v1", 2)
    registry.set_reputation("n1", 0.5)
    again = registry.admit(
        "n1", "ecdsa-sha2-nistp384 AAAA", "law", "slm-tiny", "127.0.0.1:5002", "v2", 4
    )
    assert (again.reputation, again.model_version, again.capacity, again.address) == (
        0.5, "v2", 4, "127.0.0.1:5002",
    )  # fmt: skip
    registry.seen("n1", model_version="v3")
    reopened = NodeRegistry(make_engine(db_url))  # a restarted hub
    [node] = reopened.all()
    assert node.node_id == "n1" and node.model_version == "v3" and not node.revoked
    reopened.revoke("n1", "tests")
    assert registry.get("n1").revoked
    with pytest.raises(SLMError, match="unknown node"):
        registry.seen("nope")
    with pytest.raises(SLMError, match="reputation"):
        registry.set_reputation("n1", 1.5)


def test_the_longest_hello_the_wire_allows_fits_the_registry(registry) -> None:
    """Every string a node's hello may carry, at its limit, on SQLite and PostgreSQL alike (a
    32-character column once locked nodes with 64-character versions out on PostgreSQL)."""
    node_id = "f" * 64  # sha256 hex
    domain = "d" * 64  # tokens._DOMAIN's limit
    registry.admit(node_id, "ecdsa-sha2-nistp384 " + "A" * 4000, domain, "p" * MAX_PRESET_CHARS,
                   "ipv6:%5B" + "f" * 200, "v" * MAX_VERSION_CHARS, MAX_CAPACITY)  # fmt: skip
    registry.seen(node_id, model_version="w" * MAX_VERSION_CHARS)
    [node] = registry.all()
    assert node.model_version == "w" * MAX_VERSION_CHARS and node.preset == "p" * MAX_PRESET_CHARS
    assert node.domain == domain and len(node.address) == MAX_ADDRESS_CHARS
    registry.revoke(node_id, "r" * 5000)
    assert registry.get(node_id).revoked_reason == "r" * 5000


def test_revocations_are_recorded_once_and_found_by_prefix(registry) -> None:
    for n in ("a1", "a2", "b1"):
        registry.admit(n, "ecdsa-sha2-nistp384 AAAA", "law", "slm-tiny", "127.0.0.1:1", "v1", 1)
    with pytest.raises(SLMError, match="more than one node"):
        registry.resolve("a")
    with pytest.raises(SLMError, match="no node 'c'"):
        registry.resolve("c")
    assert registry.resolve("b").node_id == "b1"
    assert registry.revoked_since("") == []
    first = registry.revoke("a2", "served spam")
    again = registry.revoke("a2", "a second thought")
    assert (again.revoked_at, again.revoked_reason) == (first.revoked_at, "served spam")
    assert [r.node_id for r in registry.revoked_since("")] == ["a2"]
    assert registry.revoked_since(first.revoked_at) == []
    registry.revoke("b1", "")
    assert [r.node_id for r in registry.revoked_since(first.revoked_at)] == ["b1"]


def test_a_node_revoked_during_its_handshake_is_refused_when_it_attaches(tmp_path) -> None:
    """The revocation lands between admission (which read the registry) and attach: the stream
    still ends with PERMISSION_DENIED and is never routed to."""
    import asyncio

    from hub.routing.admission import Applicant
    from hub.routing.config import RouterConfig
    from hub.routing.network import Network
    from hub.storage.engine import sqlite_url

    async def run() -> None:
        engine = make_engine(sqlite_url(tmp_path / "hub.db"))
        upgrade(engine)
        network = Network(engine, RouterConfig())
        profile = np.zeros(PROFILE_DIM, np.float32)
        profile[0] = 1.0
        late = Applicant("n1", "key", "law", profile, "v1", 1, "tiny", "")
        network.revoke("n1", "served spam")
        conn = network.attach(late, 1.0)
        assert conn.closed and conn.status == "PERMISSION_DENIED" and "served spam" in conn.closed
        assert "n1" not in network.router.links and "n1" not in network.connections
        ok = network.attach(Applicant("n2", "key", "law", profile, "v1", 1, "tiny", ""), 1.0)
        network.revoke("n2", "")
        assert network.cut_revoked() == ["n2"] and ok.status == "PERMISSION_DENIED"
        assert network.cut_revoked() == []

    asyncio.run(run())


def test_centred_evidence_prefers_the_node_a_prompt_is_particular_to() -> None:
    """A generic node likes every prompt a little more (its loglik per byte is higher on the
    pool too); a specific node likes its own prompts much more than its own average."""
    size = 200
    generic = evidence(-1.0 * size, size, 0.30, offset_loglik=-1.05, offset_similarity=0.30,
                       weight=1.35)  # fmt: skip
    specific = evidence(-1.1 * size, size, 0.55, offset_loglik=-1.40, offset_similarity=0.20,
                        weight=1.35)  # fmt: skip
    assert -1.0 * size > -1.1 * size and specific > generic  # raw loglik would pick generic
    assert evidence(-150.0, size, 0.0, -1.0, 0.0, weight=0.0) == -150.0 + size
