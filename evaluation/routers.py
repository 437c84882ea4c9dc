"""The routers the evaluation compares with the hub's, computed from the scores the hub
collected for every prompt: profile only, loglik only, profile top-3 then loglik, random, and
the loglik plus each profile function's vote at several weights."""

from __future__ import annotations

import math
import random

import numpy as np

FULL = "full router (the hub: loglik and similarity, less each node's offsets)"
SIMILARITY = "similarity only (each node's signed sentence-encoder similarity)"
WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the profile's vote, nats per byte per cosine


def confusion(truth: list[str], routed: list[str], domains: list[str]) -> np.ndarray:
    m = np.zeros((len(domains), len(domains)), dtype=int)
    index = {d: i for i, d in enumerate(domains)}
    for t, r in zip(truth, routed, strict=True):
        if r in index:
            m[index[t], index[r]] += 1
    return m


def weight_sweep(
    truth: list[str], cands: list[dict], votes: dict[str, list[dict[str, float]]], sizes: list[int]
) -> dict[str, dict[str, list]]:
    """Accuracy of a router the hub does not use, the profile as a vote beside the loglik: the
    evidence for a node is loglik + weight x prompt bytes x cosine (nats; the vote grows with the
    prompt as the loglik does). For each profile function and weight, on the even-numbered
    prompts (where a weight is chosen) and the odd-numbered ones (where the chosen weight is
    judged): choosing and judging on the same prompts would flatter the choice. The odd
    prompts' hits are kept for the sign test in `vote_verdict`."""
    out = {}
    for name, cosines in votes.items():
        rows: dict[str, list] = {"choose (even prompts)": [], "judge (odd prompts)": [], "hits": []}
        for w in WEIGHTS:
            hits = [
                max(cs, key=lambda d: cs[d].loglik + w * size * cos[d]) == t
                for t, cs, cos, size in zip(truth, cands, cosines, sizes, strict=True)
            ]
            rows["choose (even prompts)"].append(float(np.mean(hits[0::2])))
            rows["judge (odd prompts)"].append(float(np.mean(hits[1::2])))
            rows["hits"].append(hits[1::2])
        out[name] = rows
    return out


def chosen(rows: dict[str, list]) -> int:
    """The index of the weight the even prompts choose; ties go to the smaller weight."""
    choose = rows["choose (even prompts)"]
    return max(range(len(WEIGHTS)), key=lambda i: (choose[i], -WEIGHTS[i]))


def vote_verdict(rows: dict[str, list]) -> tuple[int, int, bool]:
    """On the odd prompts: (prompts only the chosen vote routes right, prompts only the loglik
    routes right, whether the difference is beyond chance by a sign test at about 95%)."""
    best = rows["hits"][chosen(rows)]
    wins = sum(b and not a for a, b in zip(rows["hits"][0], best, strict=True))
    losses = sum(a and not b for a, b in zip(rows["hits"][0], best, strict=True))
    return wins, losses, wins - losses > 2 * math.sqrt(max(1, wins + losses))


def other_routers(cands: list[dict], names: list[str], rng: random.Random) -> dict[str, list]:
    """What the routers the hub does not run would choose, from the scores the hub collected."""
    routed: dict[str, list[str]] = {"profile only": [], "loglik only, all nodes": [],
                                    "profile top-3, then loglik": [], SIMILARITY: [],
                                    "random": []}  # fmt: skip
    for cs in cands:
        routed[SIMILARITY].append(max(cs.values(), key=lambda c: c.similarity).domain)
        by_profile = sorted(cs.values(), key=lambda c: -c.profile_similarity)
        routed["profile only"].append(by_profile[0].domain)
        routed["loglik only, all nodes"].append(max(cs.values(), key=lambda c: c.loglik).domain)
        routed["profile top-3, then loglik"].append(
            max(by_profile[:3], key=lambda c: c.loglik).domain
        )
        routed["random"].append(rng.choice(names))
    return routed
