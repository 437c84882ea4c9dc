"""Offline: each node's word counts of its own training text as a naive Bayes router, on the
routing evaluation's prompts (large and little data; `make corpora` first). Not the hub's
router: a measurement of whether word statistics, which every node could keep of its whole
corpus, route where an adapter's 40 steps and the encoder's centroid miss, alone and beside the
scores the hub collected in a run (docs/evaluation.md).

    python -m evaluation.lexical [--alpha 1.0] [--run build/eval/large-adapter]

With --run, the run's asks.json (written by `python -m evaluation.run --work build/eval`) gives
each node's signed loglik and similarity per prompt, and the word counts are added to them: a
weight chosen on the even-numbered prompts, judged on the odd ones.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from evaluation.run import PRESETS, setting
from hub.routing.config import RouterConfig
from slm.retrieval import terms

VOCABULARY = 1_000_000  # the smoothing's vocabulary: one size for every node, none is shared
HUB_SIMILARITY_WEIGHT = RouterConfig().similarity_weight  # what the run's hub weighed with
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class WordCounts:
    """Each domain's word counts as a unigram model with add-alpha smoothing."""

    def __init__(self, training: dict[str, str], alpha: float) -> None:
        self.counts = {d: Counter(terms(text)) for d, text in training.items()}
        self.totals = {d: sum(c.values()) for d, c in self.counts.items()}
        self.alpha = alpha

    def loglik(self, domain: str, words: list[str]) -> float:
        """Nats of the words under the domain's counts."""
        counts, denominator = self.counts[domain], self.totals[domain] + self.alpha * VOCABULARY
        return sum(math.log((counts[w] + self.alpha) / denominator) for w in words)

    def scores(self, prompt: str) -> dict[str, float]:
        words = terms(prompt)
        return {d: self.loglik(d, words) for d in self.counts}


def route(prompts: list[tuple[str, str]], training: dict[str, str], alpha: float) -> list[str]:
    """The domain whose word counts give each prompt's words the highest likelihood."""
    model = WordCounts(training, alpha)
    return [max(s := model.scores(prompt), key=lambda d: s[d]) for _, prompt in prompts]


Rule = Callable[[int, str], float]  # (prompt index, domain) -> evidence


def accuracy(truth: Sequence[str], domains: Sequence[str], rule: Rule, part: slice) -> float:
    hits = [max(domains, key=lambda d: rule(i, d)) == t for i, t in enumerate(truth)]
    return float(np.mean(hits[part]))


def chosen(truth: Sequence[str], domains: Sequence[str],
           rule: Callable[[float], Rule]) -> tuple[float, float, float]:  # fmt: skip
    """(the weight the even prompts choose, its accuracy there, its accuracy on the odd ones)."""
    even = {w: accuracy(truth, domains, rule(w), slice(0, None, 2)) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (even[w], -w))
    return best, even[best], accuracy(truth, domains, rule(best), slice(1, None, 2))


def loglik_offsets(
    cands: list[dict[str, dict]], sizes: list[int], offset_sim: dict[str, float],
    weight: float = HUB_SIMILARITY_WEIGHT,
) -> dict[str, float]:  # fmt: skip
    """Each node's loglik offset (nats per byte) as the hub used it, recovered from the evidence
    it recorded: evidence = loglik - bytes x offset + weight x bytes x (similarity - its offset),
    one offset per node, so the median over the prompts is exact up to rounding."""
    return {
        d: float(np.median([
            (c[d]["loglik"] + weight * b * (c[d]["similarity"] - offset_sim[d]) - c[d]["evidence"])
            / b
            for c, b in zip(cands, sizes, strict=True)
        ]))
        for d in offset_sim
    }  # fmt: skip


def beside_the_run(run: Path, training: dict[str, str], alpha: float) -> None:
    """The run's scores, alone and with each node's word-count loglik beside them."""
    from slm.offsets import pool_vectors, similarity_offset

    asks = json.loads((run / "asks.json").read_text(encoding="utf-8"))
    truth = [a["domain"] for a in asks]
    sizes = [len(a["prompt"].encode("utf-8")) for a in asks]
    cands = [{c["domain"]: c for c in a["candidates"]} for a in asks]
    domains = sorted(training)
    vectors = pool_vectors()
    offset_sim = {
        d: similarity_offset(np.load(run / "models" / f"adapter-{d}" / "centroid.npy"), vectors)
        for d in domains
    }
    offset_ll = loglik_offsets(cands, sizes, offset_sim)
    model = WordCounts(training, alpha)
    words = [model.scores(a["prompt"]) for a in asks]

    def ll(i: int, d: str) -> float:
        return cands[i][d]["loglik"] - sizes[i] * offset_ll[d]

    def sim(i: int, d: str) -> float:
        return sizes[i] * (cands[i][d]["similarity"] - offset_sim[d])

    def hub(i: int, d: str) -> float:
        return cands[i][d]["evidence"]

    def show(name: str, rule: Rule) -> None:
        print(f"  {name}: {100 * accuracy(truth, domains, rule, slice(None)):.1f}%")

    def sweep(name: str, rule: Callable[[float], Rule]) -> None:
        w, even, odd = chosen(truth, domains, rule)
        print(f"  {name}: the even prompts choose {w:g} ({100 * even:.1f}%), "
              f"the odd ones then route {100 * odd:.1f}%")  # fmt: skip

    print(f"{run}: {len(asks)} prompts")
    show("the hub's router (as recorded)", hub)
    show("word counts alone", lambda i, d: words[i][d])
    show("centred loglik alone", ll)
    sweep("the hub's evidence + w x word counts",
          lambda w: lambda i, d: hub(i, d) + w * words[i][d])  # fmt: skip
    sweep("centred loglik + w x word counts",
          lambda w: lambda i, d: ll(i, d) + w * words[i][d])  # fmt: skip
    sweep("word counts + w x centred similarity (nats per byte)",
          lambda w: lambda i, d: words[i][d] + w * sim(i, d))  # fmt: skip
    for fixed in (0.5, 1.0, 2.0):
        sweep(
            f"centred loglik + {fixed:g} x word counts + w x centred similarity",
            lambda w, f=fixed: lambda i, d: ll(i, d) + f * words[i][d] + w * sim(i, d),
        )

    def rank(values: dict[str, float]) -> dict[str, int]:
        return {d: r for r, d in enumerate(sorted(values, key=lambda d: -values[d]), 1)}

    hub_rank = [rank({d: hub(i, d) for d in domains}) for i in range(len(asks))]
    word_rank = [rank(words[i]) for i in range(len(asks))]
    show("reciprocal-rank fusion of the hub's evidence and word counts",
         lambda i, d: 1 / (60 + hub_rank[i][d]) + 1 / (60 + word_rank[i][d]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1.0, help="additive smoothing per word")
    parser.add_argument("--run", type=Path, help="a run's folder (build/eval/large-adapter): "
                        "its scores with the word counts beside them")  # fmt: skip
    args = parser.parse_args()
    sources = ("large", "little")
    if args.run is not None:
        sources = (args.run.name.split("-")[0],)
    for source in sources:
        triples, training = setting(PRESETS["full"], source, random.Random(0))
        if args.run is not None:
            beside_the_run(args.run, training, args.alpha)
            continue
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
