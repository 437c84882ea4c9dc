"""Screening and aggregation of a round's model updates: plain numpy, no Flower, no torch.

Screening runs before any strategy, because even a robust strategy is only as good as the
arithmetic it is fed: one NaN poisons a mean, one tensor of the wrong shape breaks it. A norm
screen then drops updates far outside the cohort (a node that diverged, or scaled its update
to dominate). What survives goes to FedAvg (weighted by examples) or a robust strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hub.training.plan import STRATEGIES

Weights = dict[str, np.ndarray]

NORM_FACTOR = 5.0  # an update moving the model this many times more than its peers is dropped
EXAMPLES_FACTOR = 10.0  # no node weighs more than this many times its peers' median examples
TRIM_FRACTION = 0.2  # trimmed-mean drops this share of values at each end (at least one, n >= 3)


@dataclass
class Update:
    node: str  # the routing plane's node id
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    node: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"node": self.node, "reason": self.reason}


def _problem(update: Update, spec: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    if set(update.weights) != set(spec):
        missing, extra = (
            sorted(set(spec) - set(update.weights)),
            sorted(set(update.weights) - set(spec)),
        )
        return f"tensor names differ from the model's (missing {missing[:3]}, extra {extra[:3]})"
    for name, (shape, dtype) in spec.items():
        arr = update.weights[name]
        if tuple(arr.shape) != shape:
            return f"{name} has shape {tuple(arr.shape)}, expected {shape}"
        if arr.dtype != dtype:
            return f"{name} has dtype {arr.dtype}, expected {dtype}"
        if not np.all(np.isfinite(arr)):
            return f"{name} holds NaN or Inf"
    if update.num_examples <= 0:
        return f"num-examples is {update.num_examples}"
    return None


def screen(updates: Sequence[Update], reference: Weights) -> tuple[list[Update], list[Rejection]]:
    """Drop malformed updates, updates that change nothing, then outliers against the rest of
    the cohort (the median of the others, so one outlier cannot move its own yardstick).

    `reference` is the global model the round started from: names, shapes and dtypes must match
    it, and norms are of each update's change from it.
    """
    spec = {k: (tuple(v.shape), v.dtype) for k, v in reference.items()}
    sound, norms, rejected = [], [], []
    for u in updates:
        problem = _problem(u, spec)
        norm = 0.0 if problem else _delta_norm(u.weights, reference)
        if not problem and norm == 0.0:
            problem = "the update does not change the model (no training happened)"
        if problem:
            rejected.append(Rejection(u.node, problem))
        else:
            sound.append(u)
            norms.append(norm)
    if len(sound) < 2:
        return sound, rejected
    scale = float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in reference.values())))
    floor = 1e-3 * max(1e-12, scale)
    claims = [u.num_examples for u in sound]
    accepted = []
    for i, u in enumerate(sound):
        peer_norm = float(np.median([n for j, n in enumerate(norms) if j != i]))
        if norms[i] > NORM_FACTOR * max(peer_norm, floor):
            rejected.append(Rejection(
                u.node, f"update norm {norms[i]:.4g} is over {NORM_FACTOR:g}x its peers' "
                f"({peer_norm:.4g})",
            ))  # fmt: skip
            continue
        # Examples set a node's weight and its reward. More data is honest, so a large claim is
        # not rejected, but it counts for no more than EXAMPLES_FACTOR x the others' median.
        peers = float(np.median([c for j, c in enumerate(claims) if j != i]))
        u.num_examples = min(u.num_examples, max(1, int(EXAMPLES_FACTOR * peers)))
        accepted.append(u)
    return accepted, rejected


def _delta_norm(weights: Weights, reference: Weights) -> float:
    return float(
        np.sqrt(sum(np.sum((weights[k].astype(np.float64) - reference[k]) ** 2) for k in reference))
    )


def aggregate(updates: Sequence[Update], strategy: str = "fedavg") -> Weights:
    """The next global model from screened updates (at least one)."""
    if not updates:
        raise ValueError("no updates to aggregate")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "krum":
        return dict(updates[_krum_choice(updates)].weights)
    names = list(updates[0].weights)
    out: Weights = {}
    if strategy == "fedavg":
        total = sum(u.num_examples for u in updates)
        for k in names:
            acc = np.zeros(updates[0].weights[k].shape, dtype=np.float64)
            for u in updates:
                acc += u.weights[k].astype(np.float64) * (u.num_examples / total)
            out[k] = acc.astype(updates[0].weights[k].dtype)
        return out
    for k in names:
        stacked = np.stack([u.weights[k] for u in updates]).astype(np.float64)
        if strategy == "fedmedian":
            value = np.median(stacked, axis=0)
        else:  # trimmed-mean
            cut = max(1, int(TRIM_FRACTION * len(updates))) if len(updates) >= 3 else 0
            ordered = np.sort(stacked, axis=0)
            value = ordered[cut : len(updates) - cut].mean(axis=0)
        out[k] = value.astype(updates[0].weights[k].dtype)
    return out


def _krum_choice(updates: Sequence[Update]) -> int:
    """Krum (Blanchard et al., 2017): the update closest to its n - f - 2 nearest peers, with
    f the most Byzantine nodes the cohort can tolerate; with too few for that, all peers."""
    n = len(updates)
    if n == 1:
        return 0
    flat = [
        np.concatenate([u.weights[k].ravel().astype(np.float64) for k in updates[0].weights])
        for u in updates
    ]
    dist = np.array([[float(np.sum((a - b) ** 2)) for b in flat] for a in flat])
    f = max(0, (n - 3) // 2)
    keep = max(1, n - f - 2)
    scores = [float(np.sum(np.sort(np.delete(dist[i], i))[:keep])) for i in range(n)]
    return int(np.argmin(scores))
