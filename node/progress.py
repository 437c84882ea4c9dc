"""The training progress bar: steps, loss, validation loss, throughput, time left (stderr)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    def __init__(self, preset: str, parameters: int) -> None:
        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn(f"[bold]{preset}[/] ({parameters / 1e6:.1f}M)"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("train", total=None, status="starting")
        self.val = ""

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def step(self, step: int, total: int, loss: float) -> None:
        self.progress.update(
            self.task, completed=step, total=total, status=f"loss {loss:.3f}{self.val}"
        )

    def evaluated(self, record: dict[str, Any]) -> None:
        self.val = f" val {record['val_loss']:.3f} ({record['tokens_per_s']:.0f} tok/s)"
        mark = "best" if record["improved"] else "no improvement"
        if not self.console.is_terminal:  # a log file gets one line per validation instead
            self.console.print(
                f"step {record['step']}/{record['total_steps']} train {record['train_loss']:.4f} "
                f"val {record['val_loss']:.4f} ({mark}) {record['tokens_per_s']:.0f} tok/s"
            )
