"""What the `slm-hub` command modules share: the common options, output, times and spans, and
the hub's database."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from hub.config import DEFAULT_HOME, HubConfig
from hub.storage.timestamps import iso
from slm.errors import SLMError

if TYPE_CHECKING:  # SQLAlchemy is imported by the commands that open a database
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Parents:
    """Parent parsers for options many commands share."""

    home: argparse.ArgumentParser  # --home, --db: commands that open the hub's home
    as_json: argparse.ArgumentParser  # --json

    @classmethod
    def build(cls) -> Parents:
        home = argparse.ArgumentParser(add_help=False)
        home.add_argument(
            "--home", type=Path, default=DEFAULT_HOME,
            help="hub home: keys, hub.toml, hub.db (default: $SLM_HUB_HOME or %(default)s)",
        )  # fmt: skip
        home.add_argument("--db", help="database URL (default: hub.toml's, else <home>/hub.db)")
        as_json = argparse.ArgumentParser(add_help=False)
        as_json.add_argument("--json", action="store_true", help="JSON for scripts")
        return cls(home, as_json)


def console() -> Console:
    """Tables at the terminal's width, or 132 columns when piped to a file or a pager."""
    return Console(width=None if sys.stdout.isatty() else 132)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def current_engine(args: argparse.Namespace) -> Engine:
    """This hub's database, refused unless it is at exactly this code's schema."""
    from hub.storage.engine import check_current, make_engine

    engine = make_engine(HubConfig.load(args.home, args.db).db_url)
    check_current(engine)
    return engine


def parse_span(text: str) -> timedelta:
    """'30m', '24h', '7d', '2w' -> a timedelta."""
    span = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not span:
        raise SLMError(f"malformed duration {text!r}; use 30m, 24h, 7d or 2w")
    unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[span.group(2)]
    try:
        return timedelta(**{unit: int(span.group(1))})
    except OverflowError:
        raise SLMError(f"duration {text!r} is too long") from None


def parse_when(text: str, now: datetime | None = None) -> str:
    """An absolute date/time or a span back from now ('24h', '7d', '30m') -> the ledger's
    timestamp format."""
    now = now or datetime.now(UTC)
    try:
        if re.fullmatch(r"\d+[mhdw]", text.strip()):
            when = now - parse_span(text)
        else:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return iso(when)
    except (ValueError, OverflowError, SLMError):
        raise SLMError(
            f"malformed date {text!r}; use 2026-11-01, 2026-11-01T12:00, or 24h / 7d"
        ) from None
