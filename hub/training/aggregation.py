"""Screening and aggregation of a round's model updates: plain numpy, no Flower, no torch.

Screening runs before any strategy, because even a robust strategy is only as good as the
arithmetic it is fed: one NaN poisons a mean, one tensor of the wrong shape breaks it. A norm
screen then drops updates that did nothing (free riders) and updates far outside the cohort (a
node that diverged, or scaled its update to dominate). What survives is clipped to the cohort's
median norm and combined by the run's strategy: trimmed-mean by default, so that no one node of
a small cohort chooses the step's direction or its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hub.training.plan import DEFAULT_STRATEGY, STRATEGIES

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
    """Drop malformed updates, updates that change nothing (or next to nothing: a free rider),
    then outliers against the rest of the cohort (the median of the others, so one outlier
    cannot move its own yardstick).

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
    # A free rider moved the model by next to nothing, absolutely and next to its peers: it is
    # judged first, so that it cannot make an honest update look like an outlier.
    riders = {
        i for i, n in enumerate(norms)
        if n < min(floor, _peers(norms, i) / NORM_FACTOR)
    }  # fmt: skip
    for i in sorted(riders):
        why = (f"update norm {norms[i]:.4g} is next to nothing beside its peers' "
               f"({_peers(norms, i):.4g}): it did not train")  # fmt: skip
        rejected.append(Rejection(sound[i].node, why))
    kept = [i for i in range(len(sound)) if i not in riders]
    sound, norms = [sound[i] for i in kept], [norms[i] for i in kept]
    claims = [u.num_examples for u in sound]
    accepted = []
    for i, u in enumerate(sound):
        if len(sound) < 2:
            accepted.append(u)
            break
        peer_norm = _peers(norms, i)
        if norms[i] > NORM_FACTOR * max(peer_norm, floor):
            rejected.append(Rejection(
                u.node, f"update norm {norms[i]:.4g} is over {NORM_FACTOR:g}x its peers' "
                f"({peer_norm:.4g})",
            ))  # fmt: skip
            continue
        # Examples set a node's weight and its reward. More data is honest, so a large claim is
        # not rejected, but it counts for no more than EXAMPLES_FACTOR x the others' median.
        peers = _peers(claims, i)
        u.num_examples = min(u.num_examples, max(1, int(EXAMPLES_FACTOR * peers)))
        accepted.append(u)
    return accepted, rejected


def _peers(values: Sequence[float], i: int) -> float:
    """The median of everyone's value but the i-th."""
    return float(np.median([v for j, v in enumerate(values) if j != i]))


def _delta_norm(weights: Weights, reference: Weights) -> float:
    return float(
        np.sqrt(sum(np.sum((weights[k].astype(np.float64) - reference[k]) ** 2) for k in reference))
    )


def _norm(delta: Weights) -> float:
    return float(np.sqrt(sum(np.sum(v**2) for v in delta.values())))


def aggregate(
    updates: Sequence[Update], reference: Weights, strategy: str = DEFAULT_STRATEGY
) -> Weights:
    """The next global model: `reference` plus the cohort's step, from screened updates (at
    least one).

    Every update's change is first clipped to the cohort's (lower) median norm, so no node
    moves the model further than a typical peer however it scales its update (of two updates,
    neither further than the smaller); the step is clipped to that norm too (a coordinate-wise
    median of clipped changes can come out a little longer than any of them). Then FedAvg
    weighs the changes by examples, fedmedian and trimmed-mean combine them coordinate by
    coordinate (one node of three cannot set a coordinate), and Krum takes the most central.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    names = list(reference)
    deltas = [{k: u.weights[k].astype(np.float64) - reference[k] for k in names} for u in updates]
    norms = [_norm(d) for d in deltas]
    bound = sorted(norms)[(len(norms) - 1) // 2]  # the lower median: of two, the smaller
    clipped = [
        _scaled(d, min(1.0, bound / n) if n > 0 else 1.0)
        for d, n in zip(deltas, norms, strict=True)
    ]
    step = _combine(clipped, [u.num_examples for u in updates], strategy)
    length = _norm(step)
    if length > bound > 0:
        step = _scaled(step, bound / length)
    return {k: (reference[k] + step[k]).astype(reference[k].dtype) for k in names}


def _scaled(delta: Weights, factor: float) -> Weights:
    return {k: v * factor for k, v in delta.items()} if factor != 1.0 else delta


def _combine(deltas: Sequence[Weights], examples: Sequence[int], strategy: str) -> Weights:
    if strategy == "krum":
        return deltas[_krum_choice(deltas)]
    names = list(deltas[0])
    if strategy == "fedavg":
        total = sum(examples)
        return {k: sum(d[k] * (e / total) for d, e in zip(deltas, examples, strict=True))
                for k in names}  # fmt: skip
    out: Weights = {}
    for k in names:
        stacked = np.stack([d[k] for d in deltas])
        if strategy == "fedmedian":
            out[k] = np.median(stacked, axis=0)
        else:  # trimmed-mean
            n = len(deltas)
            cut = max(1, int(TRIM_FRACTION * n)) if n >= 3 else 0
            out[k] = np.sort(stacked, axis=0)[cut : n - cut].mean(axis=0)
    return out


def _krum_choice(deltas: Sequence[Weights]) -> int:
    """Krum (Blanchard et al., 2017): the update closest to its n - f - 2 nearest peers, with
    f the most Byzantine nodes the cohort can tolerate; with too few for that, all peers."""
    n = len(deltas)
    if n == 1:
        return 0
    flat = [np.concatenate([d[k].ravel() for k in deltas[0]]) for d in deltas]
    dist = np.array([[float(np.sum((a - b) ** 2)) for b in flat] for a in flat])
    f = max(0, (n - 3) // 2)
    keep = max(1, n - f - 2)
    scores = [float(np.sum(np.sort(np.delete(dist[i], i))[:keep])) for i in range(n)]
    return int(np.argmin(scores))
