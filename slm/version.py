"""A model's version: what a node signs with every score and what the hub's auditor checks the
fetched folder against. No torch here: the hub computes it too.

A model trained from scratch is its weights, so its version is the first 16 hex digits of the
weights file's sha256. An adapted model's weights file holds only the adapter, so its version
also binds what else decides its outputs: the base (by sha256), the adapter's shape and scale,
and the model's configuration (norm epsilon and rotary base change outputs, not shapes).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def model_version(weights_sha256: str, meta: Any) -> str:
    base = meta.get("base") if isinstance(meta, dict) else None
    if not (isinstance(base, dict) and "adapter" in base):
        return weights_sha256[:16]
    bound = {"model": meta.get("model"), "base": {k: base.get(k) for k in ("sha256", "adapter")}}
    text = json.dumps(bound, sort_keys=True) + weights_sha256
    return hashlib.sha256(text.encode()).hexdigest()[:16]
