"""Every ledger test runs against a SQLite file and against the real PostgreSQL server.

PostgreSQL is at $SWARM_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test);
each test gets a database of its own, dropped afterwards. If the server cannot be reached the
test fails: CI must not pass with the PostgreSQL half silently skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hub.ledger.keys import create_signing_key
from hub.ledger.ledger import Ledger
from hub.storage.engine import make_engine, sqlite_url, upgrade
from tests.hub.ledger_load import NODES

POSTGRES = os.environ.get("SWARM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """The SQLAlchemy URL of a new database on the real PostgreSQL server, dropped after; a
    test fails (never skips) when the server cannot be reached."""
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES} is unreachable ({exc}); these tests need it")
    name = f"swarm_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "hub.db")
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger_key"
    create_signing_key(path)
    return path


@pytest.fixture
def ledger(db_url: str, key_path: Path):
    from hub.ledger.keys import load_signing_key

    engine = make_engine(db_url)
    upgrade(engine)
    key = load_signing_key(key_path)
    led = Ledger(engine, key, key.public_key())
    led.ensure_accounts(NODES)
    yield led
    engine.dispose()
