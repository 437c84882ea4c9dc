"""The files a training run keeps in the hub home: its progress events and its domain's lock.

training/<run id>.jsonl   the run's progress, one JSON event per line, for `slm-hub train` to
                          show (and for whoever reads later)
training/<domain>.lock    held while a run trains the domain
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hub.training.plan import TrainingError


def events_path(home: Path, run_id: int) -> Path:
    return Path(home) / "training" / f"{run_id}.jsonl"


class Events:
    """The run's progress, appended as JSON lines (readers skip a torn last line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, kind: str, **data: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": kind, "time": round(time.time(), 3), **data}) + "\n")
            f.flush()


def read_events(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Whole events from byte `start` on, and where the next read should start."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, start + end


@contextlib.contextmanager
def domain_lock(home: Path, domain: str) -> Iterator[None]:
    """One run per domain at a time, enforced where runs execute (`slm-hub train` also checks,
    but two started at once could both pass): two would write the same nodes' folders."""
    path = Path(home) / "training" / f"{domain}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(
                f"another run is training {domain}; this one does nothing"
            ) from None
        yield
