"""The hub's one time format: ISO-8601 UTC with microseconds and a Z ("2026-11-23T07:25:00.
123456Z"). It sorts as text and round-trips byte for byte through SQLite and PostgreSQL, which
the ledger's hash chain needs; every table and every time filter uses it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso(when: datetime) -> str:
    """A time in the hub's format (naive times are taken as UTC); the year is padded to four
    digits, so any date sorts among the stored ones."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def now_iso() -> str:
    return iso(datetime.now(UTC))


def from_now(span: timedelta) -> str:
    return iso(datetime.now(UTC) + span)
