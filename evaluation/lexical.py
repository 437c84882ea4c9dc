"""Offline: each node's word counts of its own training text (slm/word_counts.py, the counts
nodes sign their words claims under) as a naive Bayes router, on the routing evaluation's
prompts (large and little data; `make corpora` first), alone and beside the scores the hub
collected in a run (docs/evaluation.md): how the weights of the hub's evidence were chosen.

    python -m evaluation.lexical [--run build/eval/large-adapter]

With --run, the run's asks.json (written by `python -m evaluation.run --work build/eval`) gives
each node's signed loglik and similarity per prompt, and the word counts are added to them: a
weight chosen on the even-numbered prompts, judged on the odd ones.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from evaluation.run import PRESETS, setting
from slm.word_counts import WordCounts

# what a run's hub weighed by when runs did not yet keep it in hub.json (before word counts)
BEFORE_WORDS = {"similarity_weight": 1.35, "words_weight": 0.0}
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class Counts:
    """Each domain's word counts."""

    def __init__(self, training: dict[str, str]) -> None:
        self.counts = {d: WordCounts.of_text(text) for d, text in training.items()}

    def scores(self, prompt: str) -> dict[str, float]:
        return {d: c.loglik(prompt) for d, c in self.counts.items()}


def route(prompts: list[tuple[str, str]], training: dict[str, str]) -> list[str]:
    """The domain whose word counts give each prompt's words the highest likelihood."""
    model = Counts(training)
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
    weight: float, offset_words: dict[str, float] | None = None,
    words_weight: float = 0.0,
) -> dict[str, float]:  # fmt: skip
    """Each node's loglik offset (nats per byte) as the hub used it, recovered from the evidence
    it recorded: evidence = loglik - bytes x offset + weight x bytes x (similarity - its offset)
    + words_weight x (words loglik - bytes x its offset), one offset per node, so the median
    over the prompts is exact up to rounding."""

    def words(c: dict, d: str, b: int) -> float:
        if not words_weight or offset_words is None:
            return 0.0
        return words_weight * (c[d]["words_loglik"] - b * offset_words[d])

    return {
        d: float(np.median([
            (c[d]["loglik"] + weight * b * (c[d]["similarity"] - offset_sim[d]) + words(c, d, b)
             - c[d]["evidence"]) / b
            for c, b in zip(cands, sizes, strict=True)
        ]))
        for d in offset_sim
    }  # fmt: skip


def beside_the_run(run: Path, training: dict[str, str]) -> None:
    """A run's scores, alone and with each node's word counts beside them, raw and centred on
    the calibration pool (as the hub centres them): the words loglik the nodes signed where the
    run's hub had them (its weights in the run's hub.json), else the counts of each domain's
    whole training text."""
    from slm.model_folder import read_words
    from slm.offsets import pool_vectors, similarity_offset, words_offset

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
    weights = BEFORE_WORDS
    if (run / "hub.json").exists():
        weights = json.loads((run / "hub.json").read_text(encoding="utf-8"))
    if weights["words_weight"]:  # what the nodes signed, under the counts in their folders
        kept = {d: read_words(run / "models" / f"adapter-{d}" / "words.json") for d in domains}
        offset_words = {d: words_offset(c) for d, c in kept.items()}
        words = [{d: c["words_loglik"] for d, c in cs.items()} for cs in cands]
    else:
        model = Counts(training)
        offset_words = {d: words_offset(c) for d, c in model.counts.items()}
        words = [model.scores(a["prompt"]) for a in asks]
    offset_ll = loglik_offsets(cands, sizes, offset_sim, weights["similarity_weight"],
                               offset_words, weights["words_weight"])  # fmt: skip

    def centred(i: int, d: str) -> float:
        return words[i][d] - sizes[i] * offset_words[d]

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
    show("centred word counts alone", centred)
    show("centred loglik alone", ll)
    sweep("the hub's evidence + w x word counts",
          lambda w: lambda i, d: hub(i, d) + w * words[i][d])  # fmt: skip
    sweep("centred loglik + w x word counts",
          lambda w: lambda i, d: ll(i, d) + w * words[i][d])  # fmt: skip
    sweep("centred loglik + w x centred word counts",
          lambda w: lambda i, d: ll(i, d) + w * centred(i, d))  # fmt: skip
    sweep("centred loglik + 2 x centred word counts + w x centred similarity",
          lambda w: lambda i, d: ll(i, d) + 2 * centred(i, d) + w * sim(i, d))  # fmt: skip
    print("  centred loglik + w' x centred word counts + w x centred similarity, all prompts:")
    for ww in (1.0, 2.0, 3.0):
        row = [
            accuracy(
                truth,
                domains,
                lambda i, d, ws=ws, ww=ww: ll(i, d) + ww * centred(i, d) + ws * sim(i, d),
                slice(None),
            )
            for ws in (0.0, 0.35, 0.7, 1.0, 1.35)
        ]
        print(
            f"    w' = {ww:g}: "
            + ", ".join(
                f"w = {ws:g} {100 * a:.1f}%"
                for ws, a in zip((0.0, 0.35, 0.7, 1.0, 1.35), row, strict=True)
            )
        )
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
    parser.add_argument("--run", type=Path, help="a run's folder (build/eval/large-adapter): "
                        "its scores with the word counts beside them")  # fmt: skip
    args = parser.parse_args()
    sources = ("large", "little")
    if args.run is not None:
        sources = (args.run.name.split("-")[0],)
    for source in sources:
        triples, training = setting(PRESETS["full"], source, random.Random(0))
        if args.run is not None:
            beside_the_run(args.run, training)
            continue
        prompts = [(d, prompt) for d, prompt, _ in triples]
        routed = route(prompts, training)
        right = Counter(d for (d, _), r in zip(prompts, routed, strict=True) if d == r)
        misses = Counter((d, r) for (d, _), r in zip(prompts, routed, strict=True) if d != r)
        total = sum(right.values())
        print(f"{source} data: {total}/{len(prompts)} = {100 * total / len(prompts):.1f}%; "
              + ", ".join(f"{d} {right[d]}" for d in training)
              + "; most missed to: "
              + ", ".join(f"{a}->{b} {n}" for (a, b), n in misses.most_common(4)))  # fmt: skip


if __name__ == "__main__":
    main()
