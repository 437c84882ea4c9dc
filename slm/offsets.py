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

import contextlib
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm import cache
from slm.atomic import atomic_write_text
from slm.encoder import DIM, shared_encoder
from slm.model import SLM
from slm.model_folder import LoadedModel
from slm.scoring import loglik
from slm.tokenizer import SLMTokenizer
from slm.word_counts import WordCounts

POOL = Path(__file__).with_name("calibration_pool.json")
KEPT = "offsets.json"  # in the model folder: the loglik offset of that model, for its next start
CACHED_VECTORS, CACHED_OFFSETS = "pool-vectors", "offsets"  # kinds of the machine's cache


@functools.lru_cache(maxsize=1)
def pool() -> tuple[str, ...]:
    return tuple(json.loads(POOL.read_text(encoding="utf-8"))["passages"])


@functools.lru_cache(maxsize=1)
def pool_digest() -> str:
    return hashlib.sha256(POOL.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def pool_vectors() -> np.ndarray:
    """The pool's sentence vectors (the shared encoder, which must be installed), from the
    machine's cache when this encoder and pool made them before: embedding the pool is about
    2 s of one core, paid otherwise at every node start."""
    encoder = shared_encoder()
    key = cache.key_of({"encoder": encoder.sha256, "pool": pool_digest()})
    found = cache.read_array(CACHED_VECTORS, key, (len(pool()), DIM))
    if found is None:
        found = encoder.embed(list(pool()))
        cache.write_array(CACHED_VECTORS, key, found)
    return found


@dataclass(frozen=True)
class Offsets:
    loglik_per_byte: float  # nats, mean over the pool's passages (<= 0)
    similarity: float  # mean cosine of the pool's passages to the node's centroid (0: none)
    words_per_byte: float = 0.0  # nats, mean over the pool under its word counts (0: none)


def offsets(
    model: SLM, tokenizer: SLMTokenizer, centroid: np.ndarray | None,
    pool_vectors: np.ndarray | None, words: WordCounts | None = None,
) -> Offsets:  # fmt: skip
    """The node's offsets on the calibration pool; `pool_vectors` are the pool's sentence
    vectors (slm.encoder), needed only with a centroid."""
    per_byte = [loglik(model, tokenizer, p)[0] / len(p.encode("utf-8")) for p in pool()]
    return Offsets(float(np.mean(per_byte)), similarity_offset(centroid, pool_vectors),
                   words_offset(words))  # fmt: skip


def words_offset(words: WordCounts | None) -> float:
    """The mean per byte of the pool's passages under word counts (0 without them): what a node
    signs as its offset_words. A few milliseconds: measured at every start."""
    if words is None:
        return 0.0
    return math.fsum(words.loglik(p) / len(p.encode("utf-8")) for p in pool()) / len(pool())


def similarity_offset(centroid: np.ndarray | None, pool_vectors: np.ndarray | None) -> float:
    """The mean cosine of the pool's passages to a centroid (0 without one): what a node signs
    as its offset_similarity."""
    if centroid is None or pool_vectors is None:
        return 0.0
    return float(np.mean(pool_vectors @ centroid))


def _form(model: SLM) -> str:
    """Which serving form scored: int8 (dynamically quantised Linears) or fp32."""
    return "int8" if any("quantized" in type(m).__module__ for m in model.modules()) else "fp32"


def measured(
    loaded: LoadedModel, centroid: np.ndarray | None, pool_vectors: np.ndarray | None,
    words: WordCounts | None = None,
) -> Offsets:  # fmt: skip
    """`offsets` of a loaded model folder, its loglik part kept in the folder (`offsets.json`)
    and in the machine's cache, keyed by model version, serving form, pool and tokenizer (a
    scratch model's version is its weights alone), so that the next start of the same model,
    from this folder or a copy of it, does not score the pool again: about 20 s of one core for
    the 135M base. Where neither can be written it is measured every time."""
    key = {
        "version": loaded.version,
        "form": _form(loaded.model),
        "pool": pool_digest(),
        "tokenizer": hashlib.sha256(loaded.tokenizer.to_json().encode()).hexdigest(),
    }
    path = loaded.path / KEPT if loaded.path is not None else None
    cache_key = cache.key_of(key)
    per_byte = _kept(cache.read_record(path), key) if path is not None else None
    if per_byte is not None:
        return Offsets(per_byte, similarity_offset(centroid, pool_vectors), words_offset(words))
    per_byte = _kept(cache.read_json(CACHED_OFFSETS, cache_key), key)
    if per_byte is None:
        per_byte = offsets(loaded.model, loaded.tokenizer, None, None).loglik_per_byte
        cache.write_json(CACHED_OFFSETS, cache_key, {"key": key, "loglik_per_byte": per_byte})
    if path is not None:  # the folder keeps it too, wherever it goes next
        with contextlib.suppress(OSError):
            atomic_write_text(path, json.dumps({"key": key, "loglik_per_byte": per_byte}))
    return Offsets(per_byte, similarity_offset(centroid, pool_vectors), words_offset(words))


def _kept(kept: dict | None, key: dict[str, str]) -> float | None:
    """The loglik offset a kept record holds for exactly this key, if it is a plausible one."""
    if kept is None or kept.get("key") != key:
        return None
    try:
        per_byte = float(kept["loglik_per_byte"])
    except (KeyError, TypeError, ValueError):
        return None
    return per_byte if -100.0 < per_byte <= 0.0 else None
