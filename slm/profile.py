"""The domain profile: one function, used identically by node and hub, maps text to a vector.

A text's vector is hashed word term frequency (sublinear, signed hashing into PROFILE_DIM
buckets), with English function words given zero weight as a fixed inverse document frequency,
L2-normalised. Word bigrams were measured and left out: on held-out 400-character passages of
the nine shipped corpora, nearest-profile accuracy was 91.4% for words alone at 4096 buckets and
88.3% with bigrams (87.0% vs 78.4% at 1024), because bigrams crowd the buckets. A prompt's
vector has only a few dozen non-zeros, which the hub exploits for sub-millisecond search.

A node's profile is the normalised centroid of its passages' vectors; the hub ranks nodes by the
cosine between a prompt's vector and their profiles. No model, no vocabulary to ship, stable
across processes (crc32, not Python's salted hash).
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import numpy as np

PROFILE_DIM = 4096
PASSAGE_CHARS = 1000
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves shall may might must also upon unto thee thou thy
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


def _features(text: str) -> Counter[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]
    return Counter(words)


def embed(text: str) -> np.ndarray:
    """The profile vector of one text (PROFILE_DIM float32, unit length, or zeros if no words)."""
    vec = np.zeros(PROFILE_DIM, dtype=np.float32)
    for feature, count in _features(text).items():
        h = zlib.crc32(feature.encode("utf-8"))
        vec[h & (PROFILE_DIM - 1)] += (1.0 + math.log(count)) * (1.0 if h >> 31 else -1.0)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def passages(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """Cut text into passages of about `size` characters at line boundaries."""
    out: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        length += len(line)
        if length >= size:
            out.append("".join(current))
            current, length = [], 0
    if current and "".join(current).strip():
        out.append("".join(current))
    return out


def corpus_profile(text: str) -> np.ndarray:
    """The node's profile: the unit-length centroid of its passages' vectors."""
    vectors = [embed(p) for p in passages(text)]
    centroid = np.mean(vectors, axis=0) if vectors else np.zeros(PROFILE_DIM, np.float32)
    norm = float(np.linalg.norm(centroid))
    return (centroid / norm if norm > 0 else centroid).astype(np.float32)
