"""Opening the hub database: SQLite (embedded default) or PostgreSQL, at the schema's head.

SQLite runs in WAL mode with foreign keys on and a busy timeout. Write transactions (opened
through `writing(engine)`) start with BEGIN IMMEDIATE, so concurrent writers queue for the
lock instead of failing to upgrade a read lock half-way; reads start a deferred transaction and
never block writers (WAL gives them a snapshot). Migrations are Alembic's, run from the
installed package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from slm.cache import read_json, write_json
from slm.errors import SLMError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
WRITE_OPTION = "swarmllm_write"
VERSION_TABLE = "alembic_version"  # Alembic's default name; env.py keeps it


class DatabaseError(SLMError):
    """The database cannot be reached, or its schema is not one this hub can use."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"invalid database URL {url!r}; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise DatabaseError("the hub database must be a file: sqlite:///PATH")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 60})
        _sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseError(f"unsupported database {parsed.drivername!r}: use SQLite or PostgreSQL")
    return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def writing(engine: Engine) -> Engine:
    """The engine for write transactions: on SQLite they take the write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let BEGIN below, not the driver, open transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # type: ignore[no-untyped-def]
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _alembic_config(engine: Engine | None) -> Config:
    from alembic.config import Config  # alembic costs 0.4 s to import; only migrations need it

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision or None, this code's head revision)."""
    head, _ = _revisions()
    try:
        with engine.connect() as conn:
            current = (
                conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
                if inspect(conn).has_table(VERSION_TABLE)
                else None
            )
    except OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database: {_first_line(exc)}") from None
    return current, head


def _revisions() -> tuple[str, frozenset[str]]:
    """(the head revision, every revision) of this code's migrations. Alembic takes 0.2 s of
    one core to import and read them, paid by every `slm-hub` command: the answer is kept in
    the machine's cache under the digest of the migration files, so it is read again only
    when they change."""
    digest = hashlib.sha256()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()
    kept = read_json("migrations", key)
    if kept and isinstance(kept.get("head"), str) and isinstance(kept.get("all"), list):
        return kept["head"], frozenset(map(str, kept["all"]))
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))
    head = script.get_current_head()
    assert head is not None
    known = sorted(r.revision for r in script.walk_revisions())
    write_json("migrations", key, {"head": head, "all": known})
    return head, frozenset(known)


def upgrade(engine: Engine) -> str:
    """Apply every pending migration; returns the head revision."""
    from alembic import command

    current, head = schema_state(engine)
    _refuse_newer(engine, current)
    try:
        command.upgrade(_alembic_config(engine), "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"migration failed: {_first_line(exc)}") from None
    return head


def check_current(engine: Engine) -> None:
    """Refuse a database that is not exactly at this code's schema (read-only commands)."""
    current, head = schema_state(engine)
    _refuse_newer(engine, current)
    if current != head:
        raise DatabaseError(
            f"the database {_where(engine)} is at schema {current or 'none'}, not {head}; "
            "run `slm-hub db upgrade`"
        )


def _refuse_newer(engine: Engine, current: str | None) -> None:
    if current is not None and current not in _revisions()[1]:
        raise DatabaseError(
            f"the database {_where(engine)} has schema {current}, newer than this slm-hub "
            "knows; upgrade SwarmLLM"
        )


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
