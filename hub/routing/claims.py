"""What a node's claims are checked against before they count: a score no honest model can
produce is dropped before the posterior, and a completion is paid for the tokens the hub itself
saw relayed, never for the count a node asserts.

Why bytes bound tokens: nodes decode byte-level BPE, where every token but BOS (which ends a
completion) is at least one byte of text. A node's text reaches the client whole except where
a stop string cut it, so an honest count is at most the bytes relayed, plus the bytes of the
longest stop string (the tokens that formed it), plus one token that straddled the cut, plus a
small margin for sampled ids a small tokenizer never learnt (they decode to nothing). That
bound only decides whether a signed count is believed; what is paid is never more than the
bytes relayed, and an answer with no text earns nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protos.wire import Piece, Score

REL_TOLERANCE = 1e-9  # bits_per_byte is computed from loglik in doubles on the node too
# No model explains natural text in under a hundredth of a bit per byte (the best large models
# need about 0.6; ours 1.5 and more): a claim below it is a claim of certainty, which no
# tokenizer's first token allows. What lies above it is the audit's to check.
MIN_BITS_PER_BYTE = 0.01
# Far more than any token of the byte-level BPE vocabularies nodes serve (tens of bytes at
# most): an answer's text is at most this many bytes per token asked, whatever a node sends.
MAX_TOKEN_BYTES = 128


# A model's mean log-likelihood of ordinary text is far above this (an untrained byte-level
# model gives about -5.5 nats per byte): a lower offset would buy a node evidence it has not got.
MIN_OFFSET_LOGLIK = -8.0
# The least a word can get under any word counts is ln(0.5 / 1e6) = -14.51 nats
# (slm/word_counts.py LEAST), and n words take at least 2n - 1 bytes with their separators: no
# prompt of b bytes has words below this times b + 1 nats. The calibration pool has 0.091 words
# a byte, so no counts give it a mean below -1.33 nats a byte (tests/hub/test_claims.py checks
# both against slm): a lower offset would buy a node evidence on every prompt.
MIN_WORDS_PER_BYTE, MIN_OFFSET_WORDS = -7.3, -1.4


def plausible(
    score: Score, prompt_bytes: int, has_centroid: bool = True, has_words: bool = False
) -> bool:
    """False for a claim no model can make: a non-finite loglik or one near certainty (under
    MIN_BITS_PER_BYTE), a confidence outside [0, 1], a similarity outside [-1, 1] (or any from
    a node with no centroid), a words loglik above 0 or below its least (or any from a node
    with no word counts), an offset outside its range, or a bits-per-byte that is not
    -loglik / (bytes · ln 2)."""
    if not math.isfinite(score.loglik):
        return False
    if -score.loglik / (prompt_bytes * math.log(2)) < MIN_BITS_PER_BYTE:
        return False
    if not 0.0 <= score.confidence <= 1.0:
        return False
    if not (-1.0 <= score.similarity <= 1.0 and -1.0 <= score.offset_similarity <= 1.0):
        return False  # cosines; NaN fails too
    if not has_centroid and (score.similarity or score.offset_similarity):
        return False  # a similarity to no centroid
    if not MIN_OFFSET_LOGLIK <= score.offset_loglik <= 0.0:
        return False
    if not has_words and (score.words_loglik or score.offset_words):
        return False  # words under no counts
    least = MIN_WORDS_PER_BYTE * (prompt_bytes + 1)
    if not (least <= score.words_loglik <= 0.0 and MIN_OFFSET_WORDS <= score.offset_words <= 0.0):
        return False
    expected = -score.loglik / (prompt_bytes * math.log(2))
    return math.isclose(score.bits_per_byte, expected, rel_tol=REL_TOLERANCE, abs_tol=1e-12)


class ClaimError(Exception):
    """A node streamed something no honest node sends; it is treated as a failed node."""


@dataclass
class Relayed:
    """One node's segment of an answer as the hub saw it: the basis of what it is paid."""

    budget: int  # tokens this node may generate (the answer's max_tokens less earlier segments)
    stop_bytes: int  # the longest stop string, in UTF-8 bytes
    chunks: int = 0  # pieces that carried text to the client
    bytes: int = 0  # UTF-8 bytes of text relayed to the client
    count: int = 0  # the node's running token count (unsigned until the last piece)

    def add(self, piece: Piece) -> None:
        """Take one piece; ClaimError if a running count goes backwards or past the budget (the
        last piece's signed count is judged by `agrees`, so its text still counts)."""
        if not piece.done:
            if piece.tokens < self.count:
                raise ClaimError(f"its token count went back from {self.count} to {piece.tokens}")
            if piece.tokens > self.budget:
                raise ClaimError(f"it claims {piece.tokens} tokens of {self.budget} asked for")
            self.count = piece.tokens
        if piece.text:
            size = len(piece.text.encode("utf-8"))
            if self.chunks >= self.budget:  # every piece with text is at least one token
                raise ClaimError(f"it sent more pieces of text than the {self.budget} tokens "
                                 "asked for")  # fmt: skip
            if self.bytes + size > self.budget * MAX_TOKEN_BYTES:
                raise ClaimError(f"it sent more than {MAX_TOKEN_BYTES} bytes a token")
            self.chunks += 1
            self.bytes += size

    def most_tokens(self) -> int:
        """The largest count an honest node could sign for what the hub relayed."""
        return min(self.budget, self.bytes + self.stop_bytes + 2 + self.budget // 16)

    def agrees(self, claimed: int) -> bool:
        """The node's signed count fits what the hub relayed (and its own running count)."""
        return self.count <= claimed <= self.most_tokens()

    def paid(self, claimed: int) -> int:
        """What a finished segment is paid for: its signed count, never more than the bytes
        the client received (a node cannot sign its way past the text it sent)."""
        return min(claimed, self.budget, self.bytes)

    def paid_unsigned(self) -> int:
        """A segment that ended without a signed count (the node failed mid-answer): no more
        than the pieces the client received, whatever the node's running count said."""
        return min(self.count, self.chunks, self.budget)
