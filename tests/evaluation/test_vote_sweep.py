"""The evaluation's measurement of the profile as a vote: the weight is chosen on the even
prompts only, and the verdict on the odd ones is a sign test, so neither a lucky tie nor a
two-prompt difference puts the vote into the hub."""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.routers import WEIGHTS, chosen, vote_verdict, weight_sweep


@dataclass
class Cand:
    loglik: float


def _prompt(truth_wins_loglik: bool, truth_wins_profile: bool) -> tuple[dict, dict[str, float]]:
    """Two nodes a and b, truth a: who leads on loglik and who on the profile."""
    loglik = {"a": -100.0, "b": -101.0} if truth_wins_loglik else {"a": -101.0, "b": -100.0}
    cosine = {"a": 0.5, "b": 0.1} if truth_wins_profile else {"a": 0.1, "b": 0.5}
    return {d: Cand(v) for d, v in loglik.items()}, cosine


def test_a_vote_that_rescues_many_prompts_is_chosen_and_beyond_chance() -> None:
    # 40 prompts of 100 bytes: the loglik is wrong on every fourth, the profile always right.
    prompts = [_prompt(i % 4 != 0, True) for i in range(40)]
    sweep = weight_sweep(["a"] * 40, [c for c, _ in prompts], {"p": [v for _, v in prompts]},
                         [100] * 40)  # fmt: skip
    rows = sweep["p"]
    assert rows["judge (odd prompts)"][0] == 1.0  # odd prompts: the loglik is right on them
    assert rows["choose (even prompts)"][0] == 0.5 and rows["choose (even prompts)"][1] == 1.0
    assert WEIGHTS[chosen(rows)] == 1.0  # the smallest of the tied best weights
    assert vote_verdict(rows) == (0, 0, False)  # nothing changes on the odd prompts


def test_the_verdict_needs_more_than_a_couple_of_prompts() -> None:
    n = len(WEIGHTS)
    loglik_hits = [False] * 2 + [True] * 18
    rows = {"choose (even prompts)": [0.5, 0.6] + [0.4] * (n - 2), "judge (odd prompts)": [0.0] * n,
            "hits": [loglik_hits, [True] * 20] + [loglik_hits] * (n - 2)}  # fmt: skip
    assert chosen(rows) == 1
    assert vote_verdict(rows) == (2, 0, False)
    rows["hits"][0] = [False] * 12 + [True] * 8
    assert vote_verdict(rows) == (12, 0, True)
