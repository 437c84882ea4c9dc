"""A node's offsets: what its model and its centroid say of text in general, so the hub can
tell "this prompt is mine" from "every prompt looks like mine".

Adapters of a generic corpus (code, computing) raise the likelihood of every prompt, and a
centroid near the middle of all text is close to every prompt; routed by raw claims, such a
node takes other domains' prompts. Every node scores the same calibration pool (72 passages of
the nine shipped corpora, packaged with slm) at join and reports its mean log-likelihood per
byte and mean similarity on it; the hub subtracts them (hub/routing/posterior.py). Measured on
prompts from sources no node trained on (docs/evaluation.md), centring by the pool routes as
well as centring by the traffic itself, without needing traffic, and the auditor can recompute
it from the model alone.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.encoder import shared_encoder
from slm.model import SLM
from slm.scoring import loglik
from slm.tokenizer import SLMTokenizer

POOL = Path(__file__).with_name("calibration_pool.json")


@functools.lru_cache(maxsize=1)
def pool() -> tuple[str, ...]:
    return tuple(json.loads(POOL.read_text(encoding="utf-8"))["passages"])


@functools.lru_cache(maxsize=1)
def pool_vectors() -> np.ndarray:
    """The pool's sentence vectors (the shared encoder, which must be installed)."""
    return shared_encoder().embed(list(pool()))


@dataclass(frozen=True)
class Offsets:
    loglik_per_byte: float  # nats, mean over the pool's passages (<= 0)
    similarity: float  # mean cosine of the pool's passages to the node's centroid (0: none)


def offsets(
    model: SLM, tokenizer: SLMTokenizer, centroid: np.ndarray | None,
    pool_vectors: np.ndarray | None,
) -> Offsets:  # fmt: skip
    """The node's offsets on the calibration pool; `pool_vectors` are the pool's sentence
    vectors (slm.encoder), needed only with a centroid."""
    per_byte = [loglik(model, tokenizer, p)[0] / len(p.encode("utf-8")) for p in pool()]
    similarity = 0.0
    if centroid is not None and pool_vectors is not None:
        similarity = float(np.mean(pool_vectors @ centroid))
    return Offsets(float(np.mean(per_byte)), similarity)
