"""The evaluation's node training text: each training source an equal share of the bytes, so a
domain's biggest source does not crowd out the others."""

from __future__ import annotations

from evaluation.run import mix


def test_each_source_gets_an_equal_share_and_a_small_one_gives_its_rest_away() -> None:
    big, other, small = "a" * 10_000, "b" * 10_000, "c" * 500
    text = mix([big, other, small], 3_000)
    assert text.count("c") == 500  # under its share of 1,000: all of it
    assert text.count("a") == text.count("b") == 1_250  # the rest, halved
    assert len(text.replace("\n", "")) == 3_000


def test_sources_under_the_limit_are_kept_whole() -> None:
    assert mix(["one", "two"], 1_000) == "one\n\ntwo"
