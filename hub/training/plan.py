"""What a training run does: the plan `slm-hub train` derives its flags from and the ServerApp
runs.

It travels as Flower's run config, as JSON under the one key of the static app bundle
(`protos.training_app`), so this dataclass stays the one place its fields and defaults are
defined. Flower gives the run config to every SuperNode too, so nothing private goes in it:
the ServerApp finds the hub's home and database in its environment (hub/training/superlink.py
sets it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from protos import training_app
from slm.command import option
from slm.errors import SLMError

STRATEGIES = ("fedavg", "fedmedian", "trimmed-mean", "krum")  # hub/training/aggregation.py
# Robust by default: under fedavg one node of a cohort of 2 or 3 chooses the step's direction.
DEFAULT_STRATEGY = "trimmed-mean"
FEDAVG_MIN_NODES = 3
REWARD_SPLITS = ("equal", "by-examples")
HEX = "0123456789abcdef"


class TrainingError(SLMError):
    """A run that cannot start or a round that cannot complete; the message says why."""


@dataclass(frozen=True)
class TrainingPlan:
    domain: str = ""  # only its nodes train (`slm-hub train --domain`, required there)
    node_ids: str = ""  # "flower_id=node_id,..." for the domain's registered nodes
    rounds: int = option(1, "rounds to run")
    local_steps: int = option(20, "training steps per node per round")
    strategy: str = option(DEFAULT_STRATEGY, "how updates are combined", choices=STRATEGIES)
    min_nodes: int = option(2, "nodes that must be connected, and updates a round needs")
    small_fedavg: bool = option(
        False, f"allow fedavg with --min-nodes under {FEDAVG_MIN_NODES}, where one node can "
        "choose the global step", flag="--allow-small-fedavg",
    )  # fmt: skip
    round_timeout: float = option(
        600.0,
        "seconds a round waits for updates (and for adoptions)",
        flag="--timeout",
        metavar="SECONDS",
    )
    reward: str = option("equal", "how a round's pay is split", choices=REWARD_SPLITS)
    # What the round averages, from the members' registry rows: the sha256 of the base their
    # adapters sit on, or "" for whole models. Each ClientApp checks its own model against it.
    base: str = ""

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
        small = self.min_nodes < FEDAVG_MIN_NODES
        if self.strategy == "fedavg" and small and not self.small_fedavg:
            raise TrainingError(
                f"fedavg with --min-nodes {self.min_nodes} lets one node choose the global step; "
                f"use --min-nodes {FEDAVG_MIN_NODES} or more, a robust --strategy (default "
                f"{DEFAULT_STRATEGY}), or --allow-small-fedavg to accept the risk"
            )
        if not self.round_timeout > 0:
            raise TrainingError(f"--timeout must be positive, got {self.round_timeout}")
        if self.base and not (len(self.base) == 64 and set(self.base) <= set(HEX)):
            raise TrainingError(f"a plan's base is a sha256 in hex or empty, got {self.base!r}")

    @property
    def members(self) -> dict[int, str]:
        """Flower node id -> routing-plane node id."""
        out = {}
        for pair in filter(None, self.node_ids.split(",")):
            flower_id, node = pair.split("=", 1)
            out[int(flower_id)] = node
        return out

    def run_config(self) -> dict[str, Any]:
        return {training_app.PLAN: json.dumps(asdict(self))}

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> TrainingPlan:
        """The plan a run was started with; TrainingError if the config holds none."""
        try:
            values = json.loads(str(config[training_app.PLAN]))
            return cls(**{f.name: values[f.name] for f in fields(cls)})
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"this run's config holds no training plan ({exc})") from None
