"""The hub's home folder and settings: one dataclass, read from `<home>/hub.toml`."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from hub.db import sqlite_url
from hub.ledger import Rewards
from slm.atomic import atomic_write_text
from slm.errors import SLMError

DEFAULT_HOME = Path(os.environ.get("SLM_HUB_HOME", Path.home() / ".slm-hub"))


@dataclass(frozen=True)
class HubConfig:
    home: Path
    db_url: str  # SQLAlchemy URL; SQLite file in the home by default
    keep_prompts: bool = False  # store prompt text in the ledger, not only its sha256
    rewards: Rewards = field(default_factory=Rewards)

    @property
    def signing_key_path(self) -> Path:
        return self.home / "ledger_key"

    @property
    def public_key_path(self) -> Path:
        return self.home / "ledger_key.pub"

    @property
    def settings_path(self) -> Path:
        return self.home / "hub.toml"

    @classmethod
    def load(cls, home: Path, db_url: str | None = None) -> HubConfig:
        path = home / "hub.toml"
        data: dict = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise SLMError(f"{path} is not valid TOML: {exc}") from None
        hub = data.get("hub", {})
        keep = hub.get("keep_prompts", False)
        if not isinstance(keep, bool):
            raise SLMError(f"{path}: hub.keep_prompts must be true or false, got {keep!r}")
        reward_data = data.get("rewards", {})
        known = {f.name for f in fields(Rewards)}
        unknown = set(reward_data) - known
        if unknown:
            raise SLMError(f"{path}: unknown [rewards] keys: {', '.join(sorted(unknown))}")
        for name, value in reward_data.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SLMError(f"{path}: rewards.{name} must be micro-credits >= 0, got {value!r}")
        return cls(
            home=home,
            db_url=db_url or hub.get("db_url") or sqlite_url(home / "hub.db"),
            keep_prompts=keep,
            rewards=Rewards(**reward_data),
        )

    def save(self) -> None:
        r = self.rewards
        atomic_write_text(
            self.settings_path,
            "[hub]\n"
            f"keep_prompts = {'true' if self.keep_prompts else 'false'}\n"
            '# db_url = "postgresql+psycopg://USER@HOST:5432/DB"  (default: hub.db here)\n\n'
            "[rewards]  # micro-credits (1 credit = 1000000)\n"
            f"inference_base = {r.inference_base}\n"
            f"inference_per_token = {r.inference_per_token}\n"
            f"training_round = {r.training_round}\n",
        )
