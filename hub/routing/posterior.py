"""The routing posterior: p(node | prompt) ∝ prior · exp(evidence / T), as in Branch-Train-Merge
with each node's claims centred.

Nodes score the same UTF-8 bytes, so their logliks (in nats) are directly comparable; the prior
is the node's reputation (hub.routing.audit lowers it; 0 after a proven lie). T = 1 is the
Bayesian posterior over domain experts; a larger T flattens it.

The evidence for node j on a prompt of b bytes is its loglik, less what it gives any text of
that length (b times its offset, its mean loglik per byte on the calibration pool,
slm/offsets.py), plus w nats per byte for each unit by which the prompt's similarity to the
node's centroid exceeds its mean similarity on the pool, plus w' times the loglik of the
prompt's words under the node's word counts (slm/word_counts.py), less b times their mean per
byte on the pool. Raw logliks favour nodes whose model
likes all text (an adapter of code or computing text raises every prompt's likelihood); raw
similarities favour centroids near the middle of all text. Centred, only what is particular to
this prompt counts. w and w' are chosen on half of the evaluation's prompts and judged on the other
half (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def posterior(
    logliks: Mapping[str, float], priors: Mapping[str, float], temperature: float = 1.0
) -> dict[str, float]:
    """Normalised p(node | prompt) for every node with a finite loglik and a positive prior."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = {
        node: math.log(priors.get(node, 1.0)) + ll / temperature
        for node, ll in logliks.items()
        if math.isfinite(ll) and priors.get(node, 1.0) > 0
    }
    if not logits:
        return {}
    top = max(logits.values())  # subtract the max: logliks are hundreds of nats
    weights = {node: math.exp(v - top) for node, v in logits.items()}
    total = sum(weights.values())
    return {node: w / total for node, w in weights.items()}


def evidence(
    loglik: float, size: int, similarity: float, offset_loglik: float, offset_similarity: float,
    weight: float, words_loglik: float = 0.0, offset_words: float = 0.0,
    words_weight: float = 0.0,
) -> float:  # fmt: skip
    """Nats for a node's fit to a prompt of `size` bytes, its offsets taken out."""
    return (loglik - size * offset_loglik + weight * size * (similarity - offset_similarity)
            + words_weight * (words_loglik - size * offset_words))  # fmt: skip


def ranked(probabilities: Mapping[str, float]) -> list[tuple[str, float]]:
    """Best first; ties broken by node id so routing is deterministic."""
    return sorted(probabilities.items(), key=lambda kv: (-kv[1], kv[0]))
