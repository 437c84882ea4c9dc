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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.atomic import atomic_write_text
from slm.encoder import shared_encoder
from slm.model import SLM
from slm.model_folder import LoadedModel
from slm.scoring import loglik
from slm.tokenizer import SLMTokenizer

POOL = Path(__file__).with_name("calibration_pool.json")
KEPT = "offsets.json"  # in the model folder: the loglik offset of that model, for its next start


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
    return Offsets(float(np.mean(per_byte)), _similarity(centroid, pool_vectors))


def _similarity(centroid: np.ndarray | None, pool_vectors: np.ndarray | None) -> float:
    if centroid is None or pool_vectors is None:
        return 0.0
    return float(np.mean(pool_vectors @ centroid))


def _form(model: SLM) -> str:
    """Which serving form scored: int8 (dynamically quantised Linears) or fp32."""
    return "int8" if any("quantized" in type(m).__module__ for m in model.modules()) else "fp32"


def measured(loaded: LoadedModel, centroid: np.ndarray | None,
             pool_vectors: np.ndarray | None) -> Offsets:  # fmt: skip
    """`offsets` of a loaded model folder, its loglik part kept in the folder (`offsets.json`,
    keyed by model version, serving form and pool) so that the next start of the same model
    does not score the pool again: about 20 s of one core for the 135M base at every join. A
    folder that cannot be written is measured every time."""
    key = {"version": loaded.version, "form": _form(loaded.model),
           "pool": hashlib.sha256(POOL.read_bytes()).hexdigest()}  # fmt: skip
    path = loaded.path / KEPT if loaded.path is not None else None
    try:
        kept = json.loads(path.read_text(encoding="utf-8")) if path else {}
        per_byte = float(kept["loglik_per_byte"]) if kept.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        per_byte = None
    if per_byte is None or not -100.0 < per_byte <= 0.0:
        found = offsets(loaded.model, loaded.tokenizer, centroid, pool_vectors)
        if path is not None:
            with contextlib.suppress(OSError):
                atomic_write_text(
                    path, json.dumps({"key": key, "loglik_per_byte": found.loglik_per_byte})
                )
        return found
    return Offsets(per_byte, _similarity(centroid, pool_vectors))
