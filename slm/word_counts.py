"""A node's word counts: how often each word occurs in its whole training text, the claim of fit
a node makes beside its model's loglik.

Forty steps of an adapter see a few hundred kilobytes of a node's text; its counts see all of
it. On the routing evaluation's large data (docs/evaluation.md) the adapters' centred loglik
routes 79% of the prompts, these counts alone 87%, the two together 90%: a code name, a verse's
archaic word or a statute's term is in one node's counts and no other's.

A node's claim is the prompt's words (`slm.retrieval.terms`) under a unigram model of its
counts interpolated with a uniform one over a fixed vocabulary size, with fixed weights (half
each), the same for every node: p(w) = SEEN x count(w) / total + (1 - SEEN) / VOCABULARY.
Only the counts' proportions matter, so no node buys likelihood by the size it declares (under
add-one smoothing the unseen words' share shrinks as the total grows: counts multiplied up
would have claimed more for every word they hold), and no word is less likely than
(1 - SEEN) / VOCABULARY under any counts, which bounds every claim (hub/routing/claims.py).
On the large-data run (docs/evaluation.md) SEEN from 0.1 to 0.5 and add-one smoothing route
within a point of each other. The counts travel as canonical JSON (`words.json` in the model
folder): the node commits to their sha256 when it joins and signs it with every score, and
the hub's auditor fetches them by that digest and re-scores the claim (hub/routing/audit.py).
No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from slm.retrieval import terms

FILE = "words.json"  # in the model folder
FORMAT = "swarmllm-words/1"
SEEN = 0.5  # the counts' share of each word's probability; the rest is uniform
VOCABULARY = 1_000_000  # the uniform part's vocabulary: one size for every node
LEAST = math.log((1 - SEEN) / VOCABULARY)  # nats: the least likely a word can be, -14.5
MAX_TOTAL = 10**9  # words counted: far more than any node's text (3 MB of text is 0.3 M)
MAX_WORD_CHARS = 64  # longer "words" (hashes, runs of digits) are not counted
MAX_BYTES = 16 << 20  # a counts file larger than this is refused (3 MB of text: under 0.4 MB)


class WordCountsError(ValueError):
    """Counts that are not a valid words.json."""


@dataclass(frozen=True)
class WordCounts:
    counts: Mapping[str, int]
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(self.counts.values()))

    @classmethod
    def of_text(cls, text: str) -> WordCounts:
        return cls(Counter(w for w in terms(text) if len(w) <= MAX_WORD_CHARS))

    def loglik(self, text: str) -> float:
        """Nats of the text's words under these counts (<= 0; 0 for a text of no words)."""
        share = SEEN / self.total if self.total else 0.0
        uniform = (1 - SEEN) / VOCABULARY
        return math.fsum(math.log(share * self.counts.get(w, 0) + uniform) for w in terms(text))

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same counts are the same bytes, so one digest names them."""
        facts = {"format": FORMAT, "counts": dict(sorted(self.counts.items()))}
        return json.dumps(facts, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> WordCounts:
        """WordCountsError, naming what is wrong, for anything but a valid counts file."""
        if len(data) > MAX_BYTES:
            raise WordCountsError(f"it is over {MAX_BYTES >> 20} MiB")
        try:
            facts = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # a 5,000-digit count too
            raise WordCountsError(f"it is not JSON: {exc}") from None
        if not isinstance(facts, dict) or facts.get("format") != FORMAT:
            raise WordCountsError(f"it is not a {FORMAT} file")
        counts = facts.get("counts")
        if not isinstance(counts, dict):
            raise WordCountsError("its counts are not an object")
        for word, n in counts.items():
            if not 0 < len(word) <= MAX_WORD_CHARS or type(n) is not int or n < 1:
                raise WordCountsError(f"{word[:MAX_WORD_CHARS]!r}: {n!r} is not a word and a "
                                      "positive count")  # fmt: skip
        found = cls(counts)
        if found.total > MAX_TOTAL:
            raise WordCountsError(f"it counts {found.total} words, more than {MAX_TOTAL}")
        return found
