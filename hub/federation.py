"""Federated rounds for one domain: the plan, the app bundle, the global models, the loop.

The loop is plain Python over a `Cohort` (send the global model to some nodes, collect what
comes back within a deadline), so the rules (who takes part, what is rejected, what a round
needs to complete, what is stored and credited) live here, and hub/training_app.py is only
the Flower transport under them.

Files in the hub home:
  models/<domain>/<sha256>.safetensors   every global model, named by its hash; the SQL
                                         training_rounds row of the round that made it says
                                         which one is the domain's latest
  training/<run id>.jsonl                the run's progress, one JSON event per line, for
                                         `slm-hub train` to show (and for whoever reads later)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import Engine, select

from hub.aggregation import STRATEGIES, Update, Weights, aggregate, screen
from hub.ledger import Ledger
from hub.schema import TrainingRound
from slm.atomic import atomic_write_bytes
from slm.errors import SLMError

APP_NAME, APP_PUBLISHER = "swarmllm-training", "swarmllm"
SERVERAPP, CLIENTAPP = "hub.training_app:app", "node.training_app:app"
WEIGHTS_FORMAT = "swarmllm-model/1"  # the model folder's safetensors metadata, so hashes agree


class TrainingError(SLMError):
    """A run that cannot start or a round that cannot complete; the message says why."""


@dataclass(frozen=True)
class TrainingPlan:
    """What a run does, carried to the ServerApp as Flower's run config.

    Field names are the run-config keys (with '-' for '_'); the defaults here are the app
    bundle's defaults, so this dataclass is the one place they are defined. Flower gives the
    run config to every SuperNode too, so nothing private goes in it: the ServerApp finds the
    hub's home and database in its environment (hub/superlink.py sets it).
    """

    domain: str = ""
    node_ids: str = ""  # "flower_id=node_id,..." for the domain's registered nodes
    rounds: int = 1
    local_steps: int = 20
    strategy: str = "fedavg"
    min_nodes: int = 2
    round_timeout: float = 600.0  # seconds to wait for updates (and again for adoptions)
    reward_by_examples: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise TrainingError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
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
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> TrainingPlan:
        return cls(**{f.name: config[f.name.replace("_", "-")] for f in fields(cls)})


def app_pyproject() -> str:
    """The app bundle's only file: which installed code runs, and the run config's defaults."""
    defaults = TrainingPlan().run_config()
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
    for key, value in defaults.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def app_bundle() -> bytes:
    """The FAB (a zip Flower hashes and ships to its SuperExec): pyproject.toml alone."""
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files({"pyproject.toml": app_pyproject().encode()})[0]


class GlobalStore:
    """Global models of every domain, content-addressed under <home>/models/<domain>/."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "models"

    def path(self, domain: str, sha256: str) -> Path:
        return self.root / domain / f"{sha256}.safetensors"

    def save(self, domain: str, weights: Weights) -> str:
        data = save_safetensors(
            {k: np.ascontiguousarray(v) for k, v in weights.items()},
            metadata={"format": WEIGHTS_FORMAT},
        )
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(domain, sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            atomic_write_bytes(path, data)
        return sha

    def load(self, domain: str, sha256: str) -> Weights:
        path = self.path(domain, sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TrainingError(f"the global model {path} is missing") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TrainingError(f"the global model {path} does not match its hash")
        try:
            return load_safetensors(data)
        except SafetensorError as exc:
            raise TrainingError(f"the global model {path} is corrupted: {exc}") from None


def latest_round(engine: Engine, domain: str) -> TrainingRound | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(TrainingRound)
            .where(TrainingRound.domain == domain, TrainingRound.weights_sha256 != "")
            .order_by(TrainingRound.created_at.desc(), TrainingRound.round.desc())
            .limit(1)
        ).first()
    return row


def events_path(home: Path, run_id: int) -> Path:
    return Path(home) / "training" / f"{run_id}.jsonl"


class Events:
    """The run's progress, appended as JSON lines (readers skip a torn last line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, kind: str, **data: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": kind, "time": round(time.time(), 3), **data}) + "\n")
            f.flush()


def read_events(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Whole events from byte `start` on, and where the next read should start."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, start + end


@dataclass
class Reply:
    """What one node sent back: weights and numbers, or the reason it could not."""

    weights: Weights | None = None
    num_examples: int = 0
    metrics: dict[str, float] | None = None
    error: str = ""


class Cohort(Protocol):
    """The transport: Flower's Grid in deployment, a fake in unit tests."""

    def online(self) -> set[int]: ...

    def fetch(self, nodes: Sequence[int], timeout: float) -> dict[int, Reply]: ...

    def train(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]: ...

    def adopt(
        self, nodes: Sequence[int], weights: Weights, config: dict[str, Any], timeout: float
    ) -> dict[int, Reply]: ...


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(finite)), 5) if finite else None


def run_rounds(
    plan: TrainingPlan,
    run_id: int,
    cohort: Cohort,
    ledger: Ledger,
    store: GlobalStore,
    events: Events,
    log: Callable[[str], None] = print,
) -> None:
    """Run the plan's rounds; a round that cannot complete raises TrainingError with why."""
    members = plan.members
    events.emit(
        "started",
        domain=plan.domain,
        rounds=plan.rounds,
        nodes=len(members),
        strategy=plan.strategy,
        local_steps=plan.local_steps,
    )
    weights, source = _initial_model(plan, cohort, ledger.engine, store)
    events.emit("initial", source=source)
    for number in range(1, plan.rounds + 1):
        online = sorted(cohort.online() & set(members))
        if len(online) < plan.min_nodes:
            raise TrainingError(
                f"round {number}: {len(online)} of the {len(members)} {plan.domain} nodes are "
                f"connected for training, fewer than --min-nodes {plan.min_nodes}"
            )
        events.emit("round-started", round=number, nodes=[members[n] for n in online])
        config = {"round": number, "local-steps": plan.local_steps, "run-id": run_id}
        sent_at = time.time()
        replies = cohort.train(online, weights, config, plan.round_timeout)
        replies_at = time.time()
        updates, rejected = _updates(online, replies, members, plan.round_timeout)
        accepted, screened_out = screen(updates, weights)
        rejected += [r.as_dict() for r in screened_out]
        for r in rejected:
            log(f"round {number}: rejected {r['node'][:12]}: {r['reason']}")
        if len(accepted) < plan.min_nodes:
            events.emit("round-failed", round=number, rejected=rejected)
            raise TrainingError(
                f"round {number}: {len(accepted)} usable update(s), fewer than --min-nodes "
                f"{plan.min_nodes}; rejected: "
                + "; ".join(f"{r['node'][:12]} ({r['reason']})" for r in rejected)
            )
        weights = aggregate(accepted, plan.strategy)
        sha = store.save(plan.domain, weights)
        aggregated_at = time.time()
        participants = [(u.node, u.num_examples) for u in accepted]
        metrics: dict[str, Any] = {
            "train_loss": _mean([u.metrics.get("train_loss") for u in accepted]),
            "val_loss": _mean([u.metrics.get("val_loss") for u in accepted]),
            "nodes": {u.node: u.metrics for u in accepted},
            "strategy": plan.strategy,
            "run_id": run_id,
        }
        # Recorded (and paid) before any node adopts it: a node never serves a global model
        # the hub has no record of, and the next run starts from this one.
        recorded = ledger.record_round(
            f"{run_id}:{number}", plan.domain, number, participants,
            by_examples=plan.reward_by_examples, metrics=metrics, weights_sha256=sha,
            rejected=rejected,
        )  # fmt: skip
        if not recorded:
            raise TrainingError(f"round {run_id}:{number} is already in the ledger; not paid twice")
        by_flower = {node: fid for fid, node in members.items()}
        adopted = cohort.adopt([by_flower[u.node] for u in accepted], weights,
                               {**config, "weights-sha256": sha}, plan.round_timeout)  # fmt: skip
        adopted_at = time.time()
        global_val = {members[f]: r.metrics.get("val_loss") for f, r in adopted.items()
                      if not r.error and r.metrics}  # fmt: skip
        for f, r in adopted.items():
            if r.error:
                log(f"round {number}: {members[f][:12]} did not adopt the global model: {r.error}")
        events.emit(
            "round-done", round=number, participants=[n for n, _ in participants],
            examples=[e for _, e in participants], rejected=rejected,
            train_loss=metrics["train_loss"], val_loss=metrics["val_loss"],
            global_val_loss=_mean(list(global_val.values())), weights_sha256=sha,
            adopted=sorted(members[f] for f, r in adopted.items() if not r.error),
            nodes=metrics["nodes"],
            timing={
                "train_phase_s": round(replies_at - sent_at, 3),
                "aggregate_s": round(aggregated_at - replies_at, 3),
                "adopt_phase_s": round(adopted_at - aggregated_at, 3),
                "sent_at": sent_at, "replies_at": replies_at,
                "bytes_down_per_node": int(sum(v.nbytes for v in weights.values())),
            },
        )  # fmt: skip
    events.emit("done")


def _updates(
    online: Sequence[int], replies: dict[int, Reply], members: dict[int, str], timeout: float
) -> tuple[list[Update], list[dict[str, str]]]:
    """The updates that came back, and a rejection with its reason for every node that sent
    none (silence, an error reply, a reply without weights)."""
    updates, rejected = [], []
    for flower_id in online:
        reply, node = replies.get(flower_id), members[flower_id]
        if reply is None:
            rejected.append({"node": node, "reason": f"no update within {timeout:g} s"})
        elif reply.error or reply.weights is None:
            rejected.append({"node": node, "reason": reply.error or "no weights in the reply"})
        else:
            updates.append(Update(node, reply.weights, reply.num_examples, reply.metrics or {}))
    return updates, rejected


def _initial_model(
    plan: TrainingPlan, cohort: Cohort, engine: Engine, store: GlobalStore
) -> tuple[Weights, str]:
    """The domain's latest global model; on its first run, the element-wise median of what its
    online nodes hold (among those that agree on names, shapes and dtypes, the largest group;
    fewer than three must hold the same model, since a median of two is their mean).

    Every round starts all participants from the same weights, which is what averaging needs;
    the median keeps one node from choosing that start for everyone.
    """
    last = latest_round(engine, plan.domain)
    if last is not None:
        return store.load(plan.domain, last.weights_sha256), f"global {last.weights_sha256[:16]}"
    members = plan.members
    replies = cohort.fetch(sorted(cohort.online() & set(members)), plan.round_timeout)
    groups: dict[tuple, list[Weights]] = {}
    for reply in replies.values():
        w = reply.weights
        if w is None or not all(np.all(np.isfinite(v)) for v in w.values()):
            continue
        spec = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in w.items()))
        groups.setdefault(spec, []).append(w)
    if not groups:
        raise TrainingError(f"no {plan.domain} node could send a usable starting model")
    models = max(groups.values(), key=len)
    same = all(all(np.array_equal(m[k], models[0][k]) for k in models[0]) for m in models[1:])
    if len(models) < 3 and not same:  # a median of two is their mean: either could choose it
        raise TrainingError(
            f"the {plan.domain} nodes hold different models and {len(models)} are too few for a "
            "median; start them from one base model (copy one node's model folder to the others)"
        )
    start = {k: np.median(np.stack([m[k] for m in models]), axis=0).astype(models[0][k].dtype)
             for k in models[0]}  # fmt: skip
    return start, f"the median of {len(models)} node model(s)"
