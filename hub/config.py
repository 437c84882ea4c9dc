"""The hub's settings: its home and `hub.toml` (`HubConfig`), and how `slm-hub serve` listens
(`ServeOptions`, whose fields are serve's flags). Light to import: the CLI's parser reads it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from hub.ledger.rewards import Rewards
from hub.routing.config import RouterConfig
from slm.atomic import atomic_write_text
from slm.command import option
from slm.errors import SLMError
from slm.files import HomeFile

DEFAULT_HOME = Path(os.environ.get("SLM_HUB_HOME", Path.home() / ".slm-hub"))


@dataclass(frozen=True)
class HubConfig:
    home: Path
    db_url: str  # SQLAlchemy URL; SQLite file in the home by default
    keep_prompts: bool = False  # store prompt text in the ledger, not only its sha256
    rewards: Rewards = field(default_factory=Rewards)

    signing_key_path = HomeFile("ledger_key")
    public_key_path = HomeFile("ledger_key.pub")
    settings_path = HomeFile("hub.toml")
    api_key_path = HomeFile("api_key")  # the admin key `slm-hub init` made (mode 0600)

    @classmethod
    def load(cls, home: Path, db_url: str | None = None) -> HubConfig:
        from hub.storage.engine import sqlite_url  # SQLAlchemy: not for building the CLI

        path = home / cls.settings_path.name
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
            f"training_round = {r.training_round}\n"
            f"audit_penalty = {r.audit_penalty}\n"
            f"hub_fee_ppm = {r.hub_fee_ppm}  # on top of the nodes' pay, per million\n",
        )


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the hub serves; `slm-hub serve` derives its flags from these fields."""

    host: str = option(
        "127.0.0.1", "address to listen on; 0.0.0.0 to serve other machines", metavar="HOST"
    )
    port: int = option(7443, "the routing plane's port; 0: any free")
    insecure: bool = option(False, "plaintext instead of TLS; loopback hosts only")
    heartbeat_s: float = option(5.0, "seconds between a node's heartbeats; 3 missed: dropped")
    flower_port: int = option(7444, "the training plane's port (Flower's SuperLink); 0: any free")
    http_port: int = option(7445, "the OpenAI-compatible HTTP API's port (same TLS); 0: any free")
    generalist_url: str = option(
        "", "an OpenAI-compatible API (https://HOST/v1) whose model drafts the answers domain "
        "nodes refine; its key, if it needs one, in $SLM_HUB_GENERALIST_KEY (default: "
        "generalist nodes draft)", metavar="URL",
    )  # fmt: skip
    generalist_model: str = option("", "the model --generalist-url drafts with", metavar="NAME")
    generalist_ca: Path | None = option(
        None, "a CA certificate to trust for --generalist-url (a self-signed server)",
        metavar="PEM",
    )  # fmt: skip
    router: RouterConfig = field(default_factory=RouterConfig)

    def __post_init__(self) -> None:
        if bool(self.generalist_url) != bool(self.generalist_model):
            raise SLMError("--generalist-url and --generalist-model go together: the endpoint "
                           "and the model it drafts with")  # fmt: skip
        if self.generalist_ca is not None and not self.generalist_ca.is_file():
            raise SLMError(f"--generalist-ca {self.generalist_ca} is not a file")
        from hub.tls import is_loopback  # cryptography: not for building the CLI

        if self.insecure and not is_loopback(self.host):
            raise SLMError(
                f"--insecure serves plaintext, so it is refused on {self.host}; it is for "
                "127.0.0.1 / localhost only. Drop --insecure: nodes join with --ca <home>/ca.pem"
            )
        if not 0 <= self.port <= 65535:
            raise SLMError(f"--port must be 0..65535, got {self.port}")
        if not 0 <= self.flower_port <= 65535:
            raise SLMError(f"--flower-port must be 0..65535, got {self.flower_port}")
        if not 0 <= self.http_port <= 65535:
            raise SLMError(f"--http-port must be 0..65535, got {self.http_port}")
        ports = [p for p in (self.port, self.flower_port, self.http_port) if p]
        if len(set(ports)) != len(ports):
            raise SLMError("--port, --flower-port and --http-port must differ, got "
                           f"{self.port}, {self.flower_port} and {self.http_port}")  # fmt: skip
        if not self.heartbeat_s > 0:
            raise SLMError(f"--heartbeat must be positive, got {self.heartbeat_s}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
