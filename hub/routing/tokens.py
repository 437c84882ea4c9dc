"""Join tokens: how an operator lets a new node in, once, for one domain, for a while.

The token is shown once at creation; only its sha256 is stored, so a leaked database does not
leak usable tokens. Redeeming checks domain and expiry and marks the token used in the same
transaction, so two nodes racing with one token cannot both get in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, insert, select, update

from hub.errors import StatusError
from hub.storage.engine import writing
from hub.storage.schema import JoinToken
from hub.storage.timestamps import from_now, now_iso
from slm.errors import SLMError

PREFIX = "slmj_"
_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class TokenError(StatusError):
    """A join token that cannot admit this node (unknown, used, expired, other domain)."""


@dataclass(frozen=True)
class TokenInfo:
    token_sha256: str
    domain: str
    created_at: str
    expires_at: str
    used_by: str | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_domain(domain: str) -> str:
    if not _DOMAIN.match(domain):
        raise SLMError(
            f"domain {domain!r} must be lower-case letters, digits, '-' or '_' (e.g. medicine)"
        )
    return domain


def create_token(engine: Engine, domain: str, ttl: timedelta) -> str:
    """A new single-use token for `domain`, valid for `ttl`; returned once, stored hashed."""
    check_domain(domain)
    if ttl <= timedelta(0):
        raise SLMError("a token's time to live must be positive")
    token = PREFIX + secrets.token_urlsafe(32)
    with writing(engine).begin() as conn:
        conn.execute(
            insert(JoinToken).values(
                token_sha256=_digest(token), domain=domain, created_at=now_iso(),
                expires_at=from_now(ttl),
            )
        )  # fmt: skip
    return token


def redeem_token(engine: Engine, token: str, domain: str, node_id: str) -> None:
    """Admit `node_id` to `domain` with `token`, or raise TokenError saying why not."""
    with writing(engine).begin() as conn:
        info = conn.execute(
            select(JoinToken.__table__)
            .where(JoinToken.token_sha256 == _digest(token))
            .with_for_update()
        ).first()
        if info is None:
            raise TokenError(
                "UNAUTHENTICATED",
                "unknown join token; ask the hub operator for `slm-hub token create`",
            )
        if info.used_by is not None and info.used_by != node_id:
            raise TokenError("UNAUTHENTICATED", "this join token was already used by another node")
        if info.expires_at < now_iso():
            raise TokenError("UNAUTHENTICATED", f"this join token expired at {info.expires_at}")
        if info.domain != domain:
            raise TokenError(
                "PERMISSION_DENIED",
                f"this join token is for domain {info.domain!r}, not {domain!r}",
            )
        conn.execute(
            update(JoinToken)
            .where(JoinToken.token_sha256 == info.token_sha256)
            .values(used_by=node_id, used_at=now_iso())
        )


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(JoinToken.__table__).order_by(JoinToken.created_at)).all()
    return [
        TokenInfo(r.token_sha256, r.domain, r.created_at, r.expires_at, r.used_by) for r in rows
    ]
