"""A node's word counts (slm/word_counts.py): the claim beside its loglik, which the hub's
auditor re-scores from the bytes the node committed to, so the bytes must name the counts."""

from __future__ import annotations

import json
import math

import pytest

from slm.errors import ModelFolderError
from slm.model_folder import read_words
from slm.word_counts import LEAST, MAX_TOTAL, SEEN, VOCABULARY, WordCounts, WordCountsError


def test_the_loglik_is_each_words_smoothed_share_of_the_count() -> None:
    counts = WordCounts.of_text("Otitis media of the middle ear. Otitis externa.")
    assert dict(counts.counts) == {"otitis": 2, "media": 1, "middle": 1, "ear": 1, "externa": 1}
    uniform = (1 - SEEN) / VOCABULARY
    expected = math.log(SEEN * 2 / 6 + uniform) + math.log(uniform)  # otitis, then unseen
    assert counts.loglik("The otitis of a walrus") == pytest.approx(expected, rel=1e-12)
    assert counts.loglik("the of a") == 0.0  # no words that tell texts apart
    assert WordCounts({}).loglik("walrus") == LEAST  # no counts: every word at the least


def test_counts_scaled_up_claim_no_more_than_the_counts_themselves() -> None:
    """Only proportions count: a node cannot buy likelihood by declaring a larger total."""
    honest = WordCounts.of_text("licence licensee warranty liability copyright licence")
    inflated = WordCounts({w: n * 100_000 for w, n in honest.counts.items()})
    for prompt in ("the licensee disclaims warranty", "an unseen walrus", "licence licence"):
        assert inflated.loglik(prompt) == pytest.approx(honest.loglik(prompt), rel=1e-12)
    assert honest.loglik("walrus walrus") == 2 * LEAST  # and no word is below the least


def test_the_same_counts_are_the_same_bytes_whatever_the_order_they_were_counted_in() -> None:
    a, b = WordCounts.of_text("ear nose throat ear"), WordCounts.of_text("throat ear nose ear")
    assert a.to_bytes() == b.to_bytes() and a.sha256 == b.sha256
    assert WordCounts.from_bytes(a.to_bytes()) == a
    assert WordCounts.of_text("ear nose").sha256 != a.sha256


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not a swarmllm-words/1"),
        (json.dumps({"format": "swarmllm-words/1", "counts": [1]}).encode(), "not an object"),
        (json.dumps({"format": "swarmllm-words/1", "counts": {"ear": 0}}).encode(), "positive"),
        (json.dumps({"format": "swarmllm-words/1", "counts": {"ear": 1.5}}).encode(), "positive"),
        (b'{"format": "swarmllm-words/1", "counts": {"ear": 1' + b"0" * 5000 + b"}}", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (json.dumps({"format": "swarmllm-words/1", "counts": {"ear": True}}).encode(), "positive"),
        (json.dumps({"format": "swarmllm-words/1", "counts": {"": 3}}).encode(), "positive"),
        (json.dumps({"format": "swarmllm-words/1", "counts": {"x" * 65: 3}}).encode(), "positive"),
        # a total past the bound would make every word the node has not seen less likely
        (
            json.dumps({"format": "swarmllm-words/1", "counts": {"a": MAX_TOTAL, "b": 1}}).encode(),
            "more than",
        ),
    ],
)
def test_a_counts_file_that_is_not_valid_is_refused_with_the_reason(data, words) -> None:
    with pytest.raises(WordCountsError, match=words):
        WordCounts.from_bytes(data)


def test_a_model_folder_with_broken_counts_names_the_file(tmp_path) -> None:
    assert read_words(tmp_path / "words.json") is None  # a folder without counts claims none
    (tmp_path / "words.json").write_bytes(b'{"format": "swarmllm-words/1"}')
    with pytest.raises(ModelFolderError, match=r"words\.json is not a word counts file"):
        read_words(tmp_path / "words.json")
