"""What a training run does, and the app bundle that carries it to Flower.

`TrainingPlan` is Flower's run config: its field names are the config's keys and its defaults
the bundle's defaults, so this dataclass is the one place they are defined; `slm-hub train`
derives its flags from it. Flower gives the run config to every SuperNode too, so nothing
private goes in it: the ServerApp finds the hub's home and database in its environment
(hub/training/superlink.py sets it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from slm.command import option
from slm.errors import SLMError

APP_NAME, APP_PUBLISHER = "swarmllm-training", "swarmllm"
SERVERAPP, CLIENTAPP = "hub.server_app:app", "node.training_app:app"
STRATEGIES = ("fedavg", "fedmedian", "trimmed-mean", "krum")  # hub/training/aggregation.py
REWARD_SPLITS = ("equal", "by-examples")


class TrainingError(SLMError):
    """A run that cannot start or a round that cannot complete; the message says why."""


@dataclass(frozen=True)
class TrainingPlan:
    domain: str = ""  # only its nodes train (`slm-hub train --domain`, required there)
    node_ids: str = ""  # "flower_id=node_id,..." for the domain's registered nodes
    rounds: int = option(1, "rounds to run")
    local_steps: int = option(20, "training steps per node per round")
    strategy: str = option("fedavg", "how updates are combined", choices=STRATEGIES)
    min_nodes: int = option(2, "nodes that must be connected, and updates a round needs")
    round_timeout: float = option(
        600.0,
        "seconds a round waits for updates (and for adoptions)",
        flag="--timeout",
        metavar="SECONDS",
    )
    reward: str = option("equal", "how a round's pay is split", choices=REWARD_SPLITS)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise TrainingError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if self.reward not in REWARD_SPLITS:
            raise TrainingError(
                f"unknown reward split {self.reward!r}; choose one of {', '.join(REWARD_SPLITS)}"
            )
        for name in ("rounds", "local_steps", "min_nodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not self.round_timeout > 0:
            raise TrainingError(f"--timeout must be positive, got {self.round_timeout}")

    @property
    def members(self) -> dict[int, str]:
        """Flower node id -> routing-plane node id."""
        out = {}
        for pair in filter(None, self.node_ids.split(",")):
            flower_id, node = pair.split("=", 1)
            out[int(flower_id)] = node
        return out

    def run_config(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> TrainingPlan:
        return cls(**{f.name: config[f.name] for f in fields(cls)})


def app_pyproject() -> str:
    """The app bundle's only file: which installed code runs, and the run config's defaults."""
    lines = [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{APP_NAME}"',
        'version = "1.0.0"',
        'description = "SwarmLLM federated rounds; the code is installed with swarmllm"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        f'publisher = "{APP_PUBLISHER}"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVERAPP}"',
        f'clientapp = "{CLIENTAPP}"',
        "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in TrainingPlan().run_config().items()]
    return "\n".join(lines) + "\n"


def app_bundle() -> bytes:
    """The FAB (a zip Flower hashes and ships to its SuperExec): pyproject.toml alone."""
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files({"pyproject.toml": app_pyproject().encode()})[0]
