"""Screening and aggregation of round updates (hub/training/aggregation.py), small weights."""

from __future__ import annotations

import numpy as np
import pytest

from hub.training.aggregation import NORM_FACTOR, Update, aggregate, screen

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
    out = aggregate([a, b], "fedavg")
    for k in GLOBAL:
        np.testing.assert_allclose(out[k], 0.75 * a.weights[k] + 0.25 * b.weights[k], rtol=1e-6)
        assert out[k].dtype == np.float32


def test_robust_strategies_ignore_one_poisoned_update() -> None:
    honest = [moved(f"h{i}") for i in range(4)]
    poison = Update("p", {k: np.full_like(v, 1e3) for k, v in GLOBAL.items()}, 10)
    updates = [*honest, poison]
    for strategy in ("fedmedian", "trimmed-mean"):
        out = aggregate(updates, strategy)
        assert all(np.abs(out[k] - GLOBAL[k]).max() < 0.1 for k in GLOBAL), strategy
    krum = aggregate(updates, "krum")
    assert any(all(np.array_equal(krum[k], h.weights[k]) for k in GLOBAL) for h in honest)
    mean = aggregate(updates, "fedavg")
    assert np.abs(mean["w"] - GLOBAL["w"]).max() > 100  # what the robust ones protect against


def test_median_and_trimmed_mean_are_elementwise() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    updates = [Update(str(v), {"x": np.array([v], np.float32)}, 1) for v in values]
    assert aggregate(updates, "fedmedian")["x"][0] == 3.0
    assert aggregate(updates, "trimmed-mean")["x"][0] == pytest.approx(3.0)  # drops 1 and 100


def test_unknown_strategy_and_empty_cohort_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        aggregate([moved("a")], "fedprox")
    with pytest.raises(ValueError, match="no updates"):
        aggregate([], "fedavg")


def test_updates_that_change_nothing_are_rejected_and_outsized_claims_capped() -> None:
    idle = Update("idle", {k: v.copy() for k, v in GLOBAL.items()}, 10)
    greedy = moved("greedy", examples=10_000)
    accepted, rejected = screen([moved("a"), moved("b"), idle, greedy], GLOBAL)
    assert sorted(u.node for u in accepted) == ["a", "b", "greedy"]
    assert "does not change the model" in reasons(rejected)["idle"]
    assert next(u for u in accepted if u.node == "greedy").num_examples == 100  # 10 x median 10


def test_trimmed_mean_trims_from_three_nodes_on() -> None:
    updates = [Update(str(v), {"x": np.array([v], np.float32)}, 1) for v in (1.0, 2.0, 90.0)]
    assert aggregate(updates, "trimmed-mean")["x"][0] == 2.0
