"""Offline: each node's word counts of its own training text as a naive Bayes router, on the
routing evaluation's prompts (large and little data; `make corpora` first). Not the hub's
router: a measurement of whether word statistics, which every node could keep of its whole
corpus, route where an adapter's 40 steps and the encoder's centroid miss (docs/evaluation.md).

    python -m evaluation.lexical [--alpha 1.0]
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter

from evaluation.run import PRESETS, setting
from slm.retrieval import terms

VOCABULARY = 1_000_000  # the smoothing's vocabulary: one size for every node, none is shared


def route(prompts: list[tuple[str, str]], training: dict[str, str], alpha: float) -> list[str]:
    """The domain whose word counts give each prompt's words the highest likelihood."""
    counts = {d: Counter(terms(text)) for d, text in training.items()}
    totals = {d: sum(c.values()) for d, c in counts.items()}

    def loglik(domain: str, words: list[str]) -> float:
        denominator = totals[domain] + alpha * VOCABULARY
        return sum(math.log((counts[domain][w] + alpha) / denominator) for w in words)

    routed = []
    for _, prompt in prompts:
        words = terms(prompt)
        routed.append(max(counts, key=lambda d: loglik(d, words)))
    return routed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1.0, help="additive smoothing per word")
    args = parser.parse_args()
    for source in ("large", "little"):
        triples, training = setting(PRESETS["full"], source, random.Random(0))
        prompts = [(d, prompt) for d, prompt, _ in triples]
        routed = route(prompts, training, args.alpha)
        right = Counter(d for (d, _), r in zip(prompts, routed, strict=True) if d == r)
        misses = Counter((d, r) for (d, _), r in zip(prompts, routed, strict=True) if d != r)
        total = sum(right.values())
        print(f"{source} data: {total}/{len(prompts)} = {100 * total / len(prompts):.1f}%; "
              + ", ".join(f"{d} {right[d]}" for d in training)
              + "; most missed to: "
              + ", ".join(f"{a}->{b} {n}" for (a, b), n in misses.most_common(4)))  # fmt: skip


if __name__ == "__main__":
    main()
