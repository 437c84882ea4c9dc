"""API keys: how a client is known to the hub, what it may read, and which account pays.

A key is `slmk_<key id>_<secret>`; the key id is public (it names the ledger account
"key:<key id>" and shows in `key list`), the secret is shown once at creation and stored only as
the sha256 of the whole key, compared in constant time. Revoking a key sets `revoked_at`; a
serving hub stops accepting it within its cache's lifetime (`KeyCache.ttl_s`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from hub.access.key_limits import KeyLimits
from hub.errors import StatusError
from hub.storage.engine import writing
from hub.storage.schema import ApiKey
from hub.storage.timestamps import now_iso
from slm.errors import SLMError

PREFIX = "slmk_"
_KEY = re.compile(r"^slmk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ID = re.compile(r"^[0-9a-f]{12}$")
_KEYS = ApiKey.__table__
MAX_KEY_CHARS = 200
MISS_READ_S = 0.1  # a header longer than any key is refused before it is parsed


class AuthError(StatusError):
    """No key, a malformed, unknown or revoked one: UNAUTHENTICATED."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAUTHENTICATED", message)


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    admin: bool
    rate_per_min: int
    max_concurrent: int
    created_at: str
    revoked_at: str | None

    @property
    def account(self) -> str:
        return f"key:{self.key_id}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _record(row) -> KeyRecord:  # type: ignore[no-untyped-def]
    return KeyRecord(row.key_id, row.name, bool(row.admin), row.rate_per_min, row.max_concurrent,
                     row.created_at, row.revoked_at)  # fmt: skip


def key_id_of(key: str) -> str:
    """The public id inside a key; AuthError if it is not shaped like one of ours."""
    match = _KEY.match(key) if len(key) <= MAX_KEY_CHARS else None
    if match is None:
        raise AuthError("that is not a SwarmLLM API key (they look like slmk_<12 hex>_<secret>)")
    return match.group(1)


class KeyStore:
    """The keys in the hub's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, limits: KeyLimits, admin: bool = False) -> tuple[str, KeyRecord]:
        """A new key: (the key, shown this once; its record)."""
        if not _NAME.match(name) or _ID.match(name):
            raise SLMError(f"key name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', "
                           "and not 12 hex digits (that is how key ids look)")  # fmt: skip
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = {
            "key_id": key_id, "name": name, "secret_sha256": _digest(key), "admin": admin,
            "rate_per_min": limits.rate, "max_concurrent": limits.max_concurrent,
            "created_at": now_iso(), "revoked_at": None,
        }  # fmt: skip
        try:
            with writing(self.engine).begin() as conn:
                conn.execute(insert(ApiKey).values(**row))
        except IntegrityError:
            raise SLMError(f"a key named {name!r} exists already; pick another name") from None
        return key, _record(ApiKey(**row))

    def find(self, key_or_name: str) -> KeyRecord:
        """A key by its id or its name (not revoked or revoked)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_KEYS).where(
                or_(ApiKey.key_id == key_or_name, ApiKey.name == key_or_name)
            )).all()  # fmt: skip
        row = next((r for r in rows if r.key_id == key_or_name), rows[0] if rows else None)
        if row is None:
            raise SLMError(f"no key named {key_or_name!r}; `slm-hub key list` shows them")
        return _record(row)

    def list(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_KEYS).order_by(ApiKey.created_at)).all()
        return [_record(r) for r in rows]

    def revoke(self, key_or_name: str) -> KeyRecord:
        record = self.find(key_or_name)
        if record.revoked_at is None:
            with writing(self.engine).begin() as conn:
                conn.execute(update(ApiKey).where(ApiKey.key_id == record.key_id,
                                                  ApiKey.revoked_at.is_(None))
                             .values(revoked_at=now_iso()))  # fmt: skip
        return self.find(record.key_id)

    def authenticate(self, key: str) -> KeyRecord:
        """The record of a valid, unrevoked key; AuthError otherwise."""
        key_id = key_id_of(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(_KEYS).where(ApiKey.key_id == key_id)).first()
        return _check(key, None if row is None else (row.secret_sha256, _record(row)))

    def table(self) -> dict[str, tuple[str, KeyRecord]]:
        """Every key: id -> (the key's sha256, its record)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_KEYS)).all()
        return {r.key_id: (r.secret_sha256, _record(r)) for r in rows}


def _check(key: str, stored: tuple[str, KeyRecord] | None) -> KeyRecord:
    """One message for unknown and wrong secrets, so a prober learns nothing about which key
    ids exist."""
    if stored is None or not hmac.compare_digest(stored[0], _digest(key)):
        raise AuthError("unknown API key; ask the hub operator for `slm-hub key create`")
    if stored[1].revoked_at is not None:
        raise AuthError(f"this API key was revoked at {stored[1].revoked_at}")
    return stored[1]


class KeyCache:
    """A serving hub's view of the keys: the whole table, read again at most every `ttl_s`
    (revocations and new limits apply within that). Keys are few (an operator makes each), so
    checking one is a dictionary lookup: a flood of made-up keys costs no database reads."""

    def __init__(self, store: KeyStore, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._table: dict[str, tuple[str, KeyRecord]] = {}
        self._read_at = -float("inf")

    def fresh(self) -> bool:
        """Whether `authenticate` will answer from memory, without reading the table."""
        return time.monotonic() - self._read_at <= self.ttl_s

    def authenticate(self, key: str) -> KeyRecord:
        """Blocking (a read of the table when it is older than `ttl_s`); run it off the loop."""
        key_id = key_id_of(key)  # malformed: refused before anything else
        now = time.monotonic()
        age = now - self._read_at
        # a key made since the last read is found at once; made-up ids cost at most one read
        # of the table per MISS_READ_S, however many arrive
        if age > self.ttl_s or (key_id not in self._table and age > MISS_READ_S):
            self._table = self.store.table()
            self._read_at = now
        return _check(key, self._table.get(key_id))
