"""A node's reference text: the passages it may quote when it refines a draft, found by the
words a question shares with them (BM25). A domain fact is most often asked by a name or a code
("Z77.22", "bisect_left") or a quoted opening that only exact words find; the fact evaluation
(docs/evaluation.md) recalls 73 of 90 facts this way.
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
    """Passages with their BM25 index."""

    passages: list[str]
    index: BM25 = field(init=False)

    def __post_init__(self) -> None:
        self.index = BM25(self.passages)

    def search(self, query: str, k: int = 3) -> list[int]:
        """The k best passages' indices, best first; none when no passage shares a word with
        the query."""
        if not self.passages:
            return []
        lexical = self.index.scores(query)
        if not lexical.any():
            return []
        return [int(i) for i in np.argsort(-lexical, kind="stable")[:k]]
