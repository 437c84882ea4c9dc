"""Join tokens on SQLite and PostgreSQL: single use, one domain, until they expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from hub.routing.tokens import TokenError, create_token, list_tokens, redeem_token
from hub.storage.engine import make_engine, upgrade
from slm.errors import SLMError


@pytest.fixture
def engine(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_a_token_admits_one_node_once(engine) -> None:
    token = create_token(engine, "law", timedelta(hours=1))
    assert token.startswith("slmj_")
    redeem_token(engine, token, "law", "node-a")
    redeem_token(engine, token, "law", "node-a")  # the same node reconnecting: fine
    with pytest.raises(TokenError, match="already used"):
        redeem_token(engine, token, "law", "node-b")
    [info] = list_tokens(engine)
    assert info.used_by == "node-a" and token not in info.token_sha256


def test_wrong_domain_unknown_and_expired_tokens_are_refused(engine) -> None:
    token = create_token(engine, "law", timedelta(hours=1))
    with pytest.raises(TokenError, match="for domain 'law'"):
        redeem_token(engine, token, "medicine", "node-a")
    with pytest.raises(TokenError, match="unknown"):
        redeem_token(engine, "slmj_made-up", "law", "node-a")
    with engine.connect() as conn:
        conn.execute(text("UPDATE join_tokens SET expires_at = '2000-01-01T00:00:00.000000Z'"))
        conn.commit()
    with pytest.raises(TokenError, match="expired"):
        redeem_token(engine, token, "law", "node-a")


@pytest.mark.parametrize("domain", ["Law", "", "a b", "x" * 70])
def test_bad_domains_are_refused(engine, domain: str) -> None:
    with pytest.raises(SLMError, match="domain"):
        create_token(engine, domain, timedelta(hours=1))
