"""Federated rounds for one domain: who takes part, what is rejected, what a round needs to
complete, what is stored and what is recorded.

The loop is plain Python over a `Cohort` (send the global model to some nodes, collect what
comes back within a deadline) and a `RoundBook` (where a completed round is recorded and paid:
the ledger), so these rules are tested over a fake transport, and hub/training/flower.py is
only Flower's transport under them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hub.training.aggregation import Update, Weights, aggregate, screen
from hub.training.plan import TrainingError, TrainingPlan
from hub.training.run_files import Events
from hub.training.store import GlobalStore
from protos import flower_keys as keys


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


class RoundBook(Protocol):
    """Where a completed round is recorded and paid: the ledger (hub.ledger.ledger.Ledger)."""

    def latest_weights(self, domain: str, base: str | None = None) -> str | None: ...

    def record_round(
        self, round_id: str, domain: str, round_number: int,
        participants: Sequence[tuple[str, int]], by_examples: bool = False,
        metrics: dict[str, Any] | None = None, weights_sha256: str = "",
        rejected: Sequence[dict[str, Any]] = (),
    ) -> bool: ...  # fmt: skip


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(finite)), 5) if finite else None


@dataclass
class _Run:
    """What every round of one run shares."""

    plan: TrainingPlan
    run_id: int
    cohort: Cohort
    book: RoundBook
    store: GlobalStore
    events: Events
    log: Callable[[str], None]


def run_rounds(
    plan: TrainingPlan, run_id: int, cohort: Cohort, book: RoundBook, store: GlobalStore,
    events: Events, log: Callable[[str], None] = print,
) -> None:  # fmt: skip
    """Run the plan's rounds; a round that cannot complete raises TrainingError with why."""
    events.emit(
        "started", domain=plan.domain, rounds=plan.rounds, nodes=len(plan.members),
        strategy=plan.strategy, local_steps=plan.local_steps,
    )  # fmt: skip
    last = book.latest_weights(plan.domain, plan.base)
    weights, source = _initial_model(plan, cohort, store, last)
    events.emit("initial", source=source)
    run = _Run(plan, run_id, cohort, book, store, events, log)
    for number in range(1, plan.rounds + 1):
        weights = _round(run, number, weights)
    events.emit("done")


def _round(run: _Run, number: int, weights: Weights) -> Weights:
    """One round from `weights`: train, screen, aggregate, store, record (and pay), adopt."""
    plan, members = run.plan, run.plan.members
    online = sorted(run.cohort.online() & set(members))
    if len(online) < plan.min_nodes:
        raise TrainingError(
            f"round {number}: {len(online)} of the {len(members)} {plan.domain} nodes are "
            f"connected for training, fewer than --min-nodes {plan.min_nodes}"
        )
    run.events.emit("round-started", round=number, nodes=[members[n] for n in online])
    config = {keys.ROUND: number, keys.LOCAL_STEPS: plan.local_steps, keys.RUN_ID: run.run_id}
    sent_at = time.time()
    replies = run.cohort.train(online, weights, config, plan.round_timeout)
    replies_at = time.time()
    updates, rejected = _updates(online, replies, members, plan.round_timeout)
    accepted, screened_out = screen(updates, weights)
    rejected += [r.as_dict() for r in screened_out]
    for r in rejected:
        run.log(f"round {number}: rejected {r['node'][:12]}: {r['reason']}")
    if len(accepted) < plan.min_nodes:
        run.events.emit("round-failed", round=number, rejected=rejected)
        raise TrainingError(
            f"round {number}: {len(accepted)} usable update(s), fewer than --min-nodes "
            f"{plan.min_nodes}; rejected: "
            + "; ".join(f"{r['node'][:12]} ({r['reason']})" for r in rejected)
        )
    weights = aggregate(accepted, weights, plan.strategy)
    sha = run.store.save(plan.domain, weights)
    aggregated_at = time.time()
    metrics = _record(run, number, accepted, rejected, sha)
    by_flower = {node: fid for fid, node in members.items()}
    adopt_config = {**config, keys.WEIGHTS_SHA256: sha}
    adopted = run.cohort.adopt(
        [by_flower[u.node] for u in accepted], weights, adopt_config, plan.round_timeout
    )
    adopted_at = time.time()
    global_val = {members[f]: r.metrics.get(keys.VAL_LOSS) for f, r in adopted.items()
                  if not r.error and r.metrics}  # fmt: skip
    for f, r in adopted.items():
        if r.error:
            run.log(f"round {number}: {members[f][:12]} did not adopt the global model: {r.error}")
    run.events.emit(
        "round-done", round=number, participants=[u.node for u in accepted],
        examples=[u.num_examples for u in accepted], rejected=rejected,
        train_loss=metrics[keys.TRAIN_LOSS], val_loss=metrics[keys.VAL_LOSS],
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
    return weights


def _record(
    run: _Run, number: int, accepted: list[Update], rejected: list[dict[str, str]], sha: str
) -> dict[str, Any]:
    """Record (and pay) the round before any node adopts its model: a node never serves a
    global model the hub has no record of, and the next run starts from this one."""
    metrics: dict[str, Any] = {
        keys.TRAIN_LOSS: _mean([u.metrics.get(keys.TRAIN_LOSS) for u in accepted]),
        keys.VAL_LOSS: _mean([u.metrics.get(keys.VAL_LOSS) for u in accepted]),
        "nodes": {u.node: u.metrics for u in accepted},
        "strategy": run.plan.strategy,
        "run_id": run.run_id,
        "base": run.plan.base,  # what kind of weights the round averaged: the next run's start
    }
    recorded = run.book.record_round(
        f"{run.run_id}:{number}", run.plan.domain, number,
        [(u.node, u.num_examples) for u in accepted],
        by_examples=run.plan.reward == "by-examples", metrics=metrics, weights_sha256=sha,
        rejected=rejected,
    )  # fmt: skip
    if not recorded:
        raise TrainingError(f"round {run.run_id}:{number} is already in the ledger; not paid twice")
    return metrics


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


def _adapters(weights: Weights) -> bool:
    """Whether these are an adapter's tensors (a LoRA pair per layer) rather than a model's."""
    return bool(weights) and all(k.endswith((".lora_a", ".lora_b")) for k in weights)


def _initial_model(
    plan: TrainingPlan, cohort: Cohort, store: GlobalStore, last: str | None
) -> tuple[Weights, str]:
    """The domain's latest global model of the run's kind (`last`, its hash); on its first run
    of that kind (a domain whose nodes moved onto a base or off one), the element-wise
    median of what its online nodes hold (among those that agree on names, shapes and dtypes,
    the largest group; fewer than three must hold the same model, since a median of two is their
    mean).

    Every round starts all participants from the same weights, which is what averaging needs;
    the median keeps one node from choosing that start for everyone.
    """
    if last is not None:
        stored = store.load(plan.domain, last)
        if _adapters(stored) == bool(plan.base):
            return stored, f"global {last[:16]}"
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
