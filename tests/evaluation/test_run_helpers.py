"""The evaluation's plain helpers: a node's training text gives each training source an equal
share of the bytes, so a domain's biggest source does not crowd out the others; the report says
whether one run's accuracy is far enough from the target to trust which side it is on."""

from __future__ import annotations

from evaluation.run import margin_sentence, mix


def test_each_source_gets_an_equal_share_and_a_small_one_gives_its_rest_away() -> None:
    big, other, small = "a" * 10_000, "b" * 10_000, "c" * 500
    text = mix([big, other, small], 3_000)
    assert text.count("c") == 500  # under its share of 1,000: all of it
    assert text.count("a") == text.count("b") == 1_250  # the rest, halved
    assert len(text.replace("\n", "")) == 3_000


def test_sources_under_the_limit_are_kept_whole() -> None:
    assert mix(["one", "two"], 1_000) == "one\n\ntwo"


def test_the_report_says_when_a_run_is_too_close_to_the_target_to_call() -> None:
    close = margin_sentence(289 / 320, 320)
    assert "standard error is 1.7 points" in close and "(1 prompt)" in close
    assert "either side" in close
    assert "outside it" in margin_sentence(250 / 320, 320)
