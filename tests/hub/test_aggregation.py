"""Screening and aggregation of round updates (hub/training/aggregation.py), small weights."""

from __future__ import annotations

import numpy as np
import pytest

from hub.training.aggregation import NORM_FACTOR, Update, aggregate, screen
from hub.training.plan import STRATEGIES

RNG = np.random.default_rng(0)
GLOBAL = {"w": RNG.normal(size=(4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}


def moved(node: str, scale: float = 0.01, examples: int = 10) -> Update:
    weights = {
        k: (v + scale * RNG.normal(size=v.shape)).astype(np.float32) for k, v in GLOBAL.items()
    }
    return Update(node, weights, examples)


def reasons(rejected) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r.node: r.reason for r in rejected}


def test_malformed_updates_are_rejected_with_a_reason_and_the_rest_kept() -> None:
    nan, inf, shape, dtype, names, zero = (
        moved(n) for n in ("nan", "inf", "shape", "dtype", "names", "zero")
    )
    nan.weights["w"][1, 1] = np.nan
    inf.weights["b"][0] = np.inf
    shape.weights["w"] = np.zeros((3, 4), np.float32)
    dtype.weights["b"] = dtype.weights["b"].astype(np.float64)
    del names.weights["b"]
    names.weights["c"] = np.zeros(3, np.float32)
    zero.num_examples = 0
    good = [moved("good1"), moved("good2")]
    accepted, rejected = screen([nan, inf, shape, dtype, names, zero, *good], GLOBAL)
    assert [u.node for u in accepted] == ["good1", "good2"]
    why = reasons(rejected)
    assert "NaN or Inf" in why["nan"] and "NaN or Inf" in why["inf"]
    assert "shape (3, 4), expected (4, 3)" in why["shape"]
    assert "dtype float64, expected float32" in why["dtype"]
    assert "missing ['b']" in why["names"] and "extra ['c']" in why["names"]
    assert "num-examples is 0" in why["zero"]


def test_an_update_far_outside_the_cohort_is_rejected_and_ordinary_spread_is_not() -> None:
    cohort = [moved(f"n{i}", scale=0.01 * (1 + i / 4)) for i in range(4)]
    accepted, rejected = screen([*cohort, moved("scaled", scale=0.01 * NORM_FACTOR * 3)], GLOBAL)
    assert sorted(u.node for u in accepted) == ["n0", "n1", "n2", "n3"]
    assert "update norm" in reasons(rejected)["scaled"]
    # Two nodes: the one that moved 20x further is the outlier, the other stays.
    accepted, rejected = screen([moved("calm"), moved("wild", scale=0.2)], GLOBAL)
    assert [u.node for u in accepted] == ["calm"] and list(reasons(rejected)) == ["wild"]


def test_fedavg_weights_updates_by_examples() -> None:
    a, b = moved("a", examples=30), moved("b", examples=10)
    out = aggregate([a, b], GLOBAL, "fedavg")
    # both changes clipped to the lower median norm (of two: the smaller), then weighed 3 : 1
    deltas = [{k: u.weights[k].astype(np.float64) - GLOBAL[k] for k in GLOBAL} for u in (a, b)]
    norms = [np.sqrt(sum(np.sum(v**2) for v in d.values())) for d in deltas]
    bound = min(norms)
    for k in GLOBAL:
        weighed = zip((0.75, 0.25), deltas, norms, strict=True)
        step = sum(w * d[k] * min(1, bound / n) for w, d, n in weighed)
        np.testing.assert_allclose(out[k], GLOBAL[k] + step, rtol=1e-6)
        assert out[k].dtype == np.float32


def test_no_strategy_lets_one_poisoned_update_move_the_model_far() -> None:
    honest = [moved(f"h{i}") for i in range(4)]
    poison = Update("p", {k: np.full_like(v, 1e3) for k, v in GLOBAL.items()}, 10)
    updates = [*honest, poison]
    for strategy in STRATEGIES:  # clipping to the median norm: fedavg too
        out = aggregate(updates, GLOBAL, strategy)
        assert all(np.abs(out[k] - GLOBAL[k]).max() < 0.1 for k in GLOBAL), strategy
    krum = aggregate(updates, GLOBAL, "krum")
    assert any(all(np.allclose(krum[k], h.weights[k], atol=0.02) for k in GLOBAL) for h in honest)


def _cohort_with_a_steering_attacker(rng: np.random.Generator, dim: int = 2000):  # type: ignore[no-untyped-def]
    """Two honest nodes and one that scales its update toward a chosen direction (4.5x the
    honest norm: inside the norm screen), claiming the most examples the screen lets through."""
    zero = {"x": np.zeros(dim, np.float32)}
    signal = rng.normal(size=dim)
    honest = [Update(f"h{i}", {"x": (signal + rng.normal(size=dim)).astype(np.float32)}, 1000)
              for i in range(2)]  # fmt: skip
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    largest = max(np.linalg.norm(h.weights["x"]) for h in honest)
    attacker = Update("a", {"x": (4.5 * largest * direction).astype(np.float32)}, 10_000)
    return zero, honest, attacker, direction, largest


def test_one_attacker_of_three_cannot_choose_the_default_strategy_s_step() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        zero, honest, attacker, direction, largest = _cohort_with_a_steering_attacker(rng)
        accepted, rejected = screen([*honest, attacker], zero)
        assert len(accepted) == 3 and not rejected  # within every screen: it takes part
        step = aggregate(accepted, zero)["x"].astype(np.float64)  # the default strategy
        cosine = float(step @ direction / np.linalg.norm(step))
        assert cosine < 0.5, cosine
        assert np.linalg.norm(step) <= largest * (1 + 1e-6)
    # what the default protects against: fedavg follows the attacker
    zero, honest, attacker, direction, _ = _cohort_with_a_steering_attacker(rng)
    accepted, _ = screen([*honest, attacker], zero)
    step = aggregate(accepted, zero, "fedavg")["x"].astype(np.float64)
    assert float(step @ direction / np.linalg.norm(step)) > 0.5


def test_a_free_rider_is_rejected_and_its_peers_kept() -> None:
    rider = Update("rider", {k: v + np.float32(1e-6) for k, v in GLOBAL.items()}, 10)
    for cohort in ([moved("a"), rider], [moved("a"), moved("b"), rider]):
        accepted, rejected = screen(cohort, GLOBAL)
        assert "rider" not in {u.node for u in accepted}
        assert "it did not train" in reasons(rejected)["rider"]
        assert len(accepted) == len(cohort) - 1


def test_median_and_trimmed_mean_are_elementwise() -> None:
    zero = {"x": np.zeros(2, np.float32)}
    values = [(1.0, -1.0), (2.0, -2.0), (3.0, -3.0), (4.0, 4.0), (-5.0, 5.0)]
    updates = [Update(str(v), {"x": np.array(v, np.float32)}, 1) for v in values]
    # clipped to the median norm (that of (3, -3)), the last two are (3, 3) and (-3, 3)
    np.testing.assert_allclose(aggregate(updates, zero, "fedmedian")["x"], [2.0, -1.0])
    # trimmed-mean drops the smallest and largest of each coordinate: (1+2+3)/3, (-2-1+3)/3
    np.testing.assert_allclose(aggregate(updates, zero, "trimmed-mean")["x"], [2.0, 0.0],
                               atol=1e-6)  # fmt: skip


def test_unknown_strategy_and_empty_cohort_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        aggregate([moved("a")], GLOBAL, "fedprox")
    with pytest.raises(ValueError, match="no updates"):
        aggregate([], GLOBAL, "fedavg")


def test_updates_that_change_nothing_are_rejected_and_outsized_claims_capped() -> None:
    idle = Update("idle", {k: v.copy() for k, v in GLOBAL.items()}, 10)
    greedy = moved("greedy", examples=10_000)
    accepted, rejected = screen([moved("a"), moved("b"), idle, greedy], GLOBAL)
    assert sorted(u.node for u in accepted) == ["a", "b", "greedy"]
    assert "does not change the model" in reasons(rejected)["idle"]
    assert next(u for u in accepted if u.node == "greedy").num_examples == 100  # 10 x median 10


def test_trimmed_mean_trims_from_three_nodes_on() -> None:
    zero = {"x": np.zeros(1, np.float32)}
    updates = [Update(str(v), {"x": np.array([v], np.float32)}, 1) for v in (1.0, 2.0, 90.0)]
    assert aggregate(updates, zero, "trimmed-mean")["x"][0] == 2.0
