"""Model weights in a training-plane message: one safetensors blob, carried as one Array.

Flower stores and forwards every Array of a message as objects of its own (an Array and its
5 MB chunks), each one an HTTP request, a signature check and several SQL statements in the
SuperLink. An ArrayRecord with an Array per tensor made a rank-2 adapter of the 135M base (240
tensors, 2 MB) cost the SuperLink about 50 s of one core per phase of a round (measured,
docs/benchmarks.md); the same weights as one safetensors blob are two objects.

safetensors is also the one format a node's bytes are parsed with here: a bounded JSON header
and raw little-endian tensors, no pickle; a blob that does not parse, or is not what this
module wrote, is a ValueError naming why.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

BLOB = "safetensors"  # the one Array of a weights record: the safetensors bytes, as uint8
NUMPY_STYPE = "numpy.ndarray"
DTYPES = frozenset({"float32", "float16", "float64"})  # what model weights are; nothing else


def to_record(weights: dict[str, np.ndarray]) -> ArrayRecord:
    from safetensors.numpy import save

    blob = save({k: np.ascontiguousarray(v) for k, v in weights.items()})
    return ArrayRecord({BLOB: Array(np.frombuffer(blob, dtype=np.uint8))})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The weights a record holds, refusing any other shape of record a sender could make."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    names = list(record.keys())
    if names != [BLOB]:
        raise ValueError(f"the weights record holds {names[:3]!r}, not one {BLOB!r} array")
    array = record[BLOB]
    if array.stype != NUMPY_STYPE:
        raise ValueError(f"{BLOB} is serialised as {array.stype!r}, not {NUMPY_STYPE!r}")
    value = array.numpy()
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 1:
        raise ValueError(f"{BLOB} is not a 1-D uint8 array")
    try:
        weights = load(value.tobytes())
    except (SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{BLOB} is not a safetensors blob ({exc})") from None
    odd = sorted(k for k, v in weights.items() if v.dtype.name not in DTYPES)
    if odd:
        raise ValueError(f"tensor {odd[0]} is {weights[odd[0]].dtype}, not a float type")
    return weights
