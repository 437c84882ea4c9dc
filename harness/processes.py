"""This project's console scripts as processes: started with a log file each, waited on by the
lines they write, stopped with a signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from slm.processes import free_port

__all__ = ["free_port"]

BIN = Path(sys.executable).parent  # the venv's console scripts: slm-hub, slm-node, flower-*
ENV = {
    **os.environ, "PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}  # fmt: skip


class HarnessError(Exception):
    """A process did not do what the harness waited for; the message has its output."""


def cli(
    *args: str, check: bool = False, capture: bool = True, stdin: str | None = None,
    env: dict[str, str] | None = None, timeout: float | None = 300,
) -> subprocess.CompletedProcess:  # fmt: skip
    """Run a console script to its end, as a user would (`cli("slm-hub", "nodes", ...)`)."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], input=stdin, capture_output=capture, text=True,
        env={**ENV, **(env or {})}, timeout=timeout, check=check,
    )  # fmt: skip


class Process:
    """A long-running console script; what it prints goes to `log` (appended, so a restarted
    process can share a log: `lines` are only this run's)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self._start = out.tell()
            self.proc = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**ENV, **(env or {})},
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def lines(self) -> list[str]:
        with open(self.log, "rb") as f:
            f.seek(self._start)
            return f.read().decode("utf-8", errors="replace").splitlines()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match:
        """The first line (from line `after` on) matching `pattern`; HarnessError if the process
        exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            for line in self.lines[after:]:
                if m := re.search(pattern, line):
                    return m
            if exited or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        why = "exited" if exited else f"said nothing like it in {timeout:g} s"
        raise HarnessError(
            f"no line matching {pattern!r} from {' '.join(self.args[:2])}, which {why}; its log "
            f"{self.log}:\n{self.output}"
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a hub or node drains), SIGKILL after `timeout`; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def stop_all(processes: list[Process], timeout: float = 30.0) -> None:
    """SIGTERM every process at once, then wait for each (nodes first drain in parallel)."""
    for p in processes:
        p.signal(signal.SIGTERM)
    for p in processes:
        p.stop(timeout)
