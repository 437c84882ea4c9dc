"""Who may ask, as plain objects: keys stored hashed, token buckets, concurrency, and the
gate's reservations, which never let one key's Asks in flight spend more than it holds."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from hub.access.gate import Gate, bearer, request_id_for
from hub.access.key_limits import KeyLimits
from hub.access.keys import AuthError, KeyCache, KeyRecord, KeyStore
from hub.access.limits import BUSY, CONCURRENCY, QUOTA, RATE, Limiter, LimitError
from hub.errors import StatusError
from hub.ledger.rewards import Rewards
from hub.storage.engine import make_engine, sqlite_url, upgrade


def _key(rate: int = 0, at_once: int = 0) -> KeyRecord:
    return KeyRecord("0123456789ab", "k", False, rate, at_once, "", None)


def test_keys_are_stored_hashed_and_refused_alike_when_unknown_or_wrong(tmp_path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "hub.db"))
    upgrade(engine)
    store = KeyStore(engine)
    secret, record = store.create("alice", KeyLimits(rate=5, max_concurrent=2))
    assert store.authenticate(secret) == record and record.account == f"key:{record.key_id}"
    dump = "\n".join(sqlite3.connect(tmp_path / "hub.db").iterdump())
    hidden = secret[len("slmk_") + 13 :]  # the secret part (it may hold "_" itself)
    assert len(hidden) == 43 and secret not in dump and hidden not in dump
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown = f"slmk_{'f' * 12}_{hidden}"
    messages = set()
    for bad in (wrong, unknown):
        with pytest.raises(AuthError) as refused:
            store.authenticate(bad)
        messages.add(str(refused.value))
    assert len(messages) == 1  # a prober learns nothing about which key ids exist
    with pytest.raises(AuthError, match="not a SwarmLLM API key"):
        store.authenticate("sk-" + "x" * 5000)
    cache = KeyCache(store, ttl_s=0.0)
    assert cache.authenticate(secret).name == "alice"
    store.revoke("alice")
    with pytest.raises(AuthError, match="revoked"):
        cache.authenticate(secret)


def test_bearer_values() -> None:
    assert bearer("Bearer abc ") == "abc" and bearer("bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(AuthError):
            bearer(bad)


def test_rate_concurrency_and_the_hubs_cap() -> None:
    now = [0.0]
    limiter = Limiter(max_asks=3, clock=lambda: now[0])
    slow = _key(rate=2)
    limiter.acquire(slow)
    limiter.acquire(slow)
    with pytest.raises(LimitError) as limited:
        limiter.acquire(slow)
    assert limited.value.reason == RATE and limited.value.retry_after_s == pytest.approx(30)
    now[0] = 30.0  # half a minute refills one of two a minute
    limiter.acquire(slow)
    assert limiter.in_flight == 3
    with pytest.raises(LimitError) as busy:
        limiter.acquire(_key())
    assert busy.value.reason == BUSY
    for _ in range(3):
        limiter.release(slow)
    single = _key(at_once=1)
    limiter.acquire(single)
    with pytest.raises(LimitError) as one:
        limiter.acquire(single)
    assert one.value.reason == CONCURRENCY
    limiter.release(single)
    limiter.acquire(single)


def test_reservations_never_let_asks_in_flight_spend_more_than_the_balance() -> None:
    balance = {"key:0123456789ab": 3_000_000}
    recorded: set[str] = set()
    gate = Gate(KeyCache(None, 1.0), Limiter(100), balance.__getitem__,  # type: ignore[arg-type]
                recorded.__contains__)  # fmt: skip
    key, price = _key(), Rewards().price(8)  # 1.188 credits

    async def run() -> None:
        release_a = await gate.enter(key, "a", price)
        release_b = await gate.enter(key, "b", price)
        with pytest.raises(LimitError) as poor:
            await gate.enter(key, "c", price)
        assert poor.value.reason == QUOTA
        with pytest.raises(StatusError) as twice:
            await gate.enter(key, "a", price)
        assert twice.value.status == "ABORTED"  # the same request id is in flight
        balance[key.account] -= 1_000_000  # "a" is charged what it cost, then released
        recorded.add("a")
        release_a()
        with pytest.raises(StatusError) as answered:
            await gate.enter(key, "a", price)
        assert answered.value.status == "ALREADY_EXISTS"
        with pytest.raises(LimitError):  # 3 - 1 charged - 1.188 held by "b" = 0.812: no
            await gate.enter(key, "d", price)
        assert gate.limiter.in_flight == 1 and gate.reserved == {key.account: price}
        release_b()
        assert gate.limiter.in_flight == 0 and gate.reserved == {}
        free = await gate.enter(key, "e", 0)  # a free Ask (zero prices) holds no credits
        free()
        assert gate.limiter.in_flight == 0

    asyncio.run(run())


def test_idempotency_keys_map_to_request_ids_per_key() -> None:
    a, b = _key(), KeyRecord("ba9876543210", "b", False, 0, 0, "", None)
    assert request_id_for(a, "x") == request_id_for(a, "x") != request_id_for(b, "x")
    assert len(request_id_for(a, "x" * 256)) <= 100
    with pytest.raises(StatusError):
        request_id_for(a, "x" * 257)


def test_the_price_covers_the_nodes_and_the_hubs_fee() -> None:
    rewards = Rewards()
    assert rewards.earned(0) == 0 == rewards.price(0)
    assert rewards.price(8) == 1_080_000 + 108_000
    with pytest.raises(Exception, match="hub_fee_ppm"):
        Rewards(hub_fee_ppm=1_000_001)
