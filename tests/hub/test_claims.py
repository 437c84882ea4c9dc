"""The bounds on a node's claims (hub/routing/claims.py): what no honest node can claim is
refused, and what every honest node claims is accepted (real trained models, sampled hot)."""

from __future__ import annotations

import math

import pytest

from hub.routing.claims import (
    MAX_TOKEN_BYTES,
    MIN_OFFSET_WORDS,
    MIN_WORDS_PER_BYTE,
    ClaimError,
    Relayed,
    plausible,
)
from node.identity import generate_key
from node.service import NodeService
from protos.wire import Piece, SamplingParams, Score
from slm.offsets import pool
from slm.retrieval import terms
from slm.word_counts import LEAST


def _score(loglik: float, size: int, **changes: float) -> Score:
    values = {
        "bits_per_byte": -loglik / (size * math.log(2)), "confidence": 0.5, "similarity": 0.0,
        "offset_loglik": -1.0, "offset_similarity": 0.0, "words_loglik": 0.0,
        "offset_words": 0.0, **changes,
    }  # fmt: skip
    return Score("r", loglik, values["bits_per_byte"], values["confidence"], False, b"", "v",
                 similarity=values["similarity"], offset_loglik=values["offset_loglik"],
                 offset_similarity=values["offset_similarity"],
                 words_loglik=values["words_loglik"],
                 offset_words=values["offset_words"])  # fmt: skip


def test_a_similarity_and_offsets_no_model_can_give_are_implausible() -> None:
    assert plausible(_score(-300.0, 120, similarity=0.4, offset_similarity=0.2), 120)
    lies = (
        {"similarity": 1.01},
        {"similarity": math.nan},
        {"offset_similarity": -1.5},
        {"offset_loglik": 0.5},
        {"offset_loglik": -9.0},
        {"offset_loglik": math.nan},
    )
    for lie in lies:
        assert not plausible(_score(-300.0, 120, **lie), 120), lie
    # a similarity from a node that committed to no centroid is a similarity to nothing
    assert not plausible(_score(-300.0, 120, similarity=0.3), 120, has_centroid=False)
    assert plausible(_score(-300.0, 120), 120, has_centroid=False)


def test_word_claims_no_counts_can_give_are_implausible() -> None:
    honest = {"words_loglik": -150.0, "offset_words": -1.1}
    assert plausible(_score(-300.0, 120, **honest), 120, has_words=True)
    assert plausible(_score(-300.0, 120, words_loglik=0.0), 120, has_words=True)  # no words
    # the least any counts give: -14.51 nats a word, a word and its separator 2 bytes
    assert plausible(_score(-300.0, 1, words_loglik=LEAST), 1, has_words=True)
    assert plausible(_score(-300.0, 3, words_loglik=2 * LEAST), 3, has_words=True)  # "a b"
    lies = (
        {"words_loglik": 1.0},  # a word likelier than certain
        {"words_loglik": -7.3 * 121 - 1},  # below what any counts give
        {"words_loglik": math.nan},
        {"words_loglik": -math.inf},
        {"offset_words": 0.1},
        {"offset_words": -1.5},  # an offset that buys every prompt evidence
        {"offset_words": math.nan},
    )
    for lie in lies:
        assert not plausible(_score(-300.0, 120, **{**honest, **lie}), 120, has_words=True), lie
    # words under counts the node never committed to are words under nothing
    assert not plausible(_score(-300.0, 120, **honest), 120, has_words=False)
    assert not plausible(_score(-300.0, 120, offset_words=-1.0), 120, has_words=False)


def test_the_words_bounds_hold_for_any_counts_on_the_shipped_pool() -> None:
    """The hub cannot import slm's word counts; its bounds are checked against them here."""
    assert MIN_WORDS_PER_BYTE * 2 <= LEAST  # a word of one byte and one byte of separator
    least_offset = LEAST * sum(len(terms(p)) / len(p.encode("utf-8")) for p in pool()) / len(pool())
    assert MIN_OFFSET_WORDS <= least_offset < MIN_OFFSET_WORDS + 0.1


def test_impossible_scores_are_implausible_and_consistent_ones_are_not() -> None:
    assert plausible(_score(-300.0, 120), 120)
    assert plausible(_score(-1.0, 120), 120)  # 0.012 bits per byte: better than any model, yet
    # not certainty; the audit's business
    for certain in (0.0, -0.0, -1e-9, 1e-9, 5.0):  # p(prompt) = 1 or more
        assert not plausible(_score(certain, 120), 120)
    for bad in (math.inf, -math.inf, math.nan):
        assert not plausible(_score(bad, 120), 120)
    assert not plausible(_score(-300.0, 120, bits_per_byte=1.0), 120)
    assert not plausible(_score(-300.0, 121), 120)  # scored other bytes than the prompt's
    assert not plausible(_score(-300.0, 120, confidence=1.01), 120)
    assert not plausible(_score(-300.0, 120, confidence=-0.01), 120)


def _piece(text: str, tokens: int, done: bool = False) -> Piece:
    return Piece("r", text, tokens, done)


def test_running_counts_may_not_go_back_or_past_the_budget() -> None:
    seen = Relayed(budget=8, stop_bytes=0)
    seen.add(_piece("ab", 2))
    with pytest.raises(ClaimError, match="went back from 2 to 1"):
        seen.add(_piece("c", 1))
    with pytest.raises(ClaimError, match="claims 9 tokens of 8"):
        seen.add(_piece("c", 9))
    seen.add(_piece("", 2**32 - 1, done=True))  # a signed last count is judged, not refused
    assert not seen.agrees(2**32 - 1) and seen.most_tokens() == 4  # 2 bytes + 2
    assert seen.paid(2**32 - 1) == 2  # never more than the bytes relayed


def test_the_hub_ends_a_stream_at_max_tokens_whatever_the_node_counts() -> None:
    seen = Relayed(budget=4, stop_bytes=0)
    for _ in range(4):
        seen.add(_piece("x", 0))  # a liar's count stays at 0
    with pytest.raises(ClaimError, match="more pieces of text than the 4 tokens"):
        seen.add(_piece("x", 0))
    assert seen.chunks == 4 and seen.bytes == 4
    flood = Relayed(budget=2, stop_bytes=0)
    with pytest.raises(ClaimError, match="bytes a token"):
        flood.add(_piece("y" * (2 * MAX_TOKEN_BYTES + 1), 1))
    assert flood.bytes == 0  # refused before it counts


def test_a_failed_segment_is_worth_the_pieces_received_at_most() -> None:
    seen = Relayed(budget=16, stop_bytes=0)
    for _ in range(3):
        seen.add(_piece("x", 16))
    assert seen.paid_unsigned() == 3
    nothing = Relayed(budget=16, stop_bytes=0)
    nothing.add(_piece("", 16))
    assert nothing.paid_unsigned() == 0


@pytest.mark.parametrize("domain", ["medicine", "law", "religion"])
def test_every_honest_count_agrees_with_what_the_hub_relays(trained, domain: str) -> None:
    """Sampled hot (rare tokens, split UTF-8, ids a small tokenizer never learnt), with and
    without stop strings: the node's signed count always fits the bound."""
    service = NodeService(trained[domain].load(), generate_key())
    prompt = trained[domain].held_out[:120]
    for seed in range(12):
        stop = ("the", "\n\n", "e") if seed % 3 == 0 else ()
        params = SamplingParams(max_tokens=48, temperature=2.0, seed=seed, stop=stop)
        seen = Relayed(params.max_tokens, max((len(s.encode()) for s in stop), default=0))
        for piece in service.generate(f"r{seed}", prompt, params):
            seen.add(piece)
            if piece.done:
                assert seen.agrees(piece.tokens), (seed, piece.tokens, seen)
