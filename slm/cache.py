"""The machine's cache: what every process of this user would otherwise compute again from
files that do not change (a converted base, the calibration pool's sentence vectors, a model
version's offsets). Everything in it is derived, keyed by digests of its inputs, written whole
(temporary file, then rename) and checked when read; a missing, damaged or unwritable cache only
costs the time it would have saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.atomic import atomic_write_bytes

if TYPE_CHECKING:  # numpy only where arrays are kept: the hub's commands read JSON alone
    import numpy as np

CACHE_ENV = "SLM_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """$SLM_CACHE_DIR, else $XDG_CACHE_HOME/swarmllm, else ~/.cache/swarmllm; then `kind`/."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "swarmllm")
    return Path(root) / kind


def key_of(fields: dict[str, Any]) -> str:
    """A file name for a cache entry: the digest of its inputs' description."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def read_array(kind: str, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached float32 array, or None unless it is there, whole, of `shape` and finite."""
    import numpy as np

    try:
        data = (cache_dir(kind) / f"{key}.npy").read_bytes()
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.dtype != np.float32 or array.shape != shape or not np.all(np.isfinite(array)):
        return None
    return array


def write_array(kind: str, key: str, array: np.ndarray) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    with contextlib.suppress(OSError):
        atomic_write_bytes(cache_dir(kind) / f"{key}.npy", buffer.getvalue())


def read_json(kind: str, key: str) -> dict[str, Any] | None:
    return read_record(cache_dir(kind) / f"{key}.json")


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object kept in `path` (here, or a model folder's own), or None where it is
    missing, unreadable or not an object."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_json(kind: str, key: str, value: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        atomic_write_bytes(cache_dir(kind) / f"{key}.json", json.dumps(value).encode("utf-8"))
