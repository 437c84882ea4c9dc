"""The node's home folder: where its key, settings (node.toml) and model live."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from slm.atomic import atomic_write_text
from slm.errors import SLMError

DEFAULT_HOME = Path(os.environ.get("SLM_NODE_HOME", Path.home() / ".slm-node"))


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one node, read from `<home>/node.toml`."""

    home: Path
    model_dir: Path

    @property
    def key_path(self) -> Path:
        return self.home / "node_key"

    @property
    def settings_path(self) -> Path:
        return self.home / "node.toml"

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
