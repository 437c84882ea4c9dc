"""The node's settings: its home folder (`NodeConfig`: key, node.toml, model) and how it
serves a hub (`JoinOptions`, whose fields are `slm-node join`'s flags). Light to import: the
CLI's parser reads it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from slm.atomic import atomic_write_text
from slm.command import option
from slm.errors import ConfigError, SLMError
from slm.files import HomeFile

DEFAULT_HOME = Path(os.environ.get("SLM_NODE_HOME", Path.home() / ".slm-node"))


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one node, read from `<home>/node.toml`."""

    home: Path
    model_dir: Path

    key_path = HomeFile("node_key")
    settings_path = HomeFile("node.toml")

    @classmethod
    def default(cls, home: Path) -> NodeConfig:
        return cls(home=home, model_dir=home / "model")

    @classmethod
    def load(cls, home: Path) -> NodeConfig:
        """The node's settings; a home without node.toml gets the defaults."""
        path = home / "node.toml"
        if not path.exists():
            return cls.default(home)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8")).get("node", {})
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SLMError(f"{path} is not valid TOML: {exc}") from None
        return cls(home=home, model_dir=home / data.get("model_dir", "model"))

    def save(self) -> None:
        model = os.path.relpath(self.model_dir, self.home)
        atomic_write_text(self.settings_path, f'[node]\nmodel_dir = "{model}"\n')


@dataclass(frozen=True)
class JoinOptions:
    """How a node serves a hub; `slm-node join` derives its flags from these fields."""

    hub: str = option(help="the hub's address", metavar="HOST:PORT")
    token: str = option("", "join token (`slm-hub token create`): the first time only")
    ca: Path | None = option(None, "the hub's CA certificate (its <home>/ca.pem)", metavar="PEM")
    insecure: bool = option(False, "plaintext, for a hub serving on loopback only")
    capacity: int = option(2, "requests served at once")
    min_confidence: float = option(0.0, "decline prompts the model is less confident of, 0..1")
    role: str = option(
        "domain", "domain: answer the prompts the hub routes here by confidence; generalist: "
        "draft answers for domain nodes to refine (serve an imported base: `slm-node import`)",
        choices=("domain", "generalist"),
    )  # fmt: skip
    drain_s: float = 30.0  # how long a shutdown waits for requests in progress
    backoff_s: tuple[float, float] = (0.5, 30.0)  # first and longest wait between dials

    def __post_init__(self) -> None:
        from protos.channel import check_address, credentials  # gRPC: only once joining

        check_address(self.hub)
        credentials(self.ca, self.insecure)  # a missing CA fails now, not on every retry
        if self.capacity < 1:
            raise ConfigError(f"--capacity must be at least 1, got {self.capacity}")
