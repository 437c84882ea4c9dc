"""A node's reference text: the passages it may quote when it refines a draft, found by the
words a question shares with them (BM25) and by meaning (the sentence encoder), and how close
a text is to what the node knows.

Why both: a domain fact is often asked by a name or a code ("Z77.22", "bisect_left") that only
exact words find, and as often in other words than the text's, which only the encoder finds;
reciprocal-rank fusion merges the two rankings without tuning their scales against each other.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from slm.profile import STOPWORDS

PASSAGE_CHARS = 400  # about 100 tokens: three fit a small model's prompt beside a draft
_TERM = re.compile(r"[a-z0-9]+(?:[._'][a-z0-9]+)*")  # keeps codes and names whole: z77.22
BM25_K1, BM25_B = 1.2, 0.75
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al., 2009)


def terms(text: str) -> list[str]:
    """The words that can tell passages apart: English function words carry no topic."""
    return [t for t in _TERM.findall(text.lower()) if t not in STOPWORDS]


def passages(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """The text cut into passages of about `size` characters, at line ends where lines are
    short, else at sentence ends; none empty."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        pieces = re.split(r"(?<=[.!?])\s+", line) if len(line) > size else [line]
        for piece in pieces:
            if not piece.strip():
                if len(current) >= size // 2:
                    out.append(current.strip())
                    current = ""
                continue
            current = f"{current}\n{piece}" if current else piece
            if len(current) >= size:
                out.append(current.strip())
                current = ""
    if current.strip():
        out.append(current.strip())
    return out


@dataclass
class BM25:
    """Okapi BM25 over passages, postings in plain dicts (a node's reference text is at most a
    few MB)."""

    docs: Sequence[str]
    postings: dict[str, dict[int, int]] = field(default_factory=dict)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        lengths = []
        for i, doc in enumerate(self.docs):
            counts = Counter(terms(doc))
            lengths.append(sum(counts.values()))
            for term, n in counts.items():
                self.postings.setdefault(term, {})[i] = n
        self.lengths = np.asarray(lengths, dtype=np.float64)

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(len(self.docs))
        if not len(self.docs):
            return out
        mean = max(float(self.lengths.mean()), 1.0)
        for term in set(terms(query)):
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (len(self.docs) - len(posting) + 0.5) / (len(posting) + 0.5))
            ids = np.fromiter(posting, dtype=np.int64)
            tf = np.fromiter(posting.values(), dtype=np.float64)
            norm = BM25_K1 * (1 - BM25_B + BM25_B * self.lengths[ids] / mean)
            out[ids] += idf * tf * (BM25_K1 + 1) / (tf + norm)
        return out


@dataclass
class Reference:
    """Passages with their BM25 index and, when given, their sentence vectors (unit length)."""

    passages: list[str]
    vectors: np.ndarray | None = None  # (passages, dim)
    index: BM25 = field(init=False)

    def __post_init__(self) -> None:
        self.index = BM25(self.passages)

    def search(self, query: str, k: int = 3, query_vector: np.ndarray | None = None) -> list[int]:
        """The k best passages' indices, best first: BM25 alone, or fused with the encoder's
        ranking when both the passages' and the query's vectors are known."""
        if not self.passages:
            return []
        lexical = self.index.scores(query)
        ranks = [np.argsort(-lexical, kind="stable")]
        if self.vectors is not None and query_vector is not None:
            ranks.append(np.argsort(-(self.vectors @ query_vector), kind="stable"))
        fused = np.zeros(len(self.passages))
        for order in ranks:
            fused[order] += 1.0 / (RRF_K + np.arange(1, len(order) + 1))
        if not lexical.any() and len(ranks) == 1:
            return []  # no word in common and no vectors: nothing is relevant
        return [int(i) for i in np.argsort(-fused, kind="stable")[:k]]

    def similarity(self, query_vector: np.ndarray, k: int = 5) -> float:
        """The mean cosine of the k passages nearest the query: how close it is to what the
        node knows (0 without vectors)."""
        if self.vectors is None or not len(self.vectors):
            return 0.0
        sims = self.vectors @ query_vector
        k = min(k, len(sims))
        return float(np.mean(np.partition(sims, len(sims) - k)[-k:]))
