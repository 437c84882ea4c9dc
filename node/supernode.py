"""The node's side of the training plane: `slm-node join` runs and supervises `flower-supernode`.

The hub's welcome names the port of its Flower SuperLink; the SuperNode dials the same host the
node dialled, with the node's own key (the hub registered it on admission), the hub's CA, and a
`--node-config` that tells the ClientApp where the model, the data and the domain are. A
SuperNode that exits (the SuperLink restarting, a registration that had not landed yet) is
restarted with backoff; a new address (the hub came back on another port) restarts it at once.
Draining the node stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slm import processes
from slm.errors import SLMError

RESTART_FIRST_S, RESTART_MAX_S = 1.0, 30.0
HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True)
class SuperNodeOptions:
    home: Path  # FLWR_HOME and the log live under <home>/flower
    key: Path  # the node's OpenSSH private key
    ca: Path | None
    insecure: bool
    node_config: dict[str, str]  # model, domain, data: read by the ClientApp


def node_config_arg(values: dict[str, str]) -> str:
    """Flower's `key='value' ...` form, which it reads with a regex and then TOML.

    Its regex ends a quoted value at the first quote of the same kind, so a value goes in a TOML
    literal string ('...', no escapes) unless it holds a ' or a newline, then in a basic string
    ("...", JSON escapes are valid TOML) unless it also holds a ".
    """
    parts = []
    for key, value in values.items():
        if "'" not in value and "\n" not in value:
            parts.append(f"{key}='{value}'")
        elif '"' not in value:
            parts.append(f"{key}={json.dumps(value)}")
        else:
            raise SLMError(
                f"{key} {value!r} holds both ' and \"; Flower's --node-config cannot carry it: "
                "rename or move it"
            )
    return " ".join(parts)


class SuperNode:
    def __init__(self, options: SuperNodeOptions, log: Callable[[str], None]) -> None:
        self.options = options
        self.log = log
        self.address: str | None = None
        self._changed = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = options.home / "flower" / "supernode.log"

    def point_at(self, address: str) -> None:
        """The SuperLink to dial (from the hub's welcome); a change restarts the SuperNode."""
        if address != self.address:
            self.address = address
            self._changed.set()

    def command(self, address: str) -> list[str]:
        o = self.options
        cmd = [
            processes.tool("flower-supernode"), "--superlink", address,
            "--auth-supernode-private-key", str(o.key),
            "--node-config", node_config_arg(o.node_config),
            "--port", str(processes.free_port()),
        ]  # fmt: skip
        if o.insecure:
            return [*cmd, "--insecure"]
        return [*cmd, "--root-certificates", str(o.ca)] if o.ca else cmd

    async def supervise(self, stop: asyncio.Event) -> None:
        (self.options.home / "flower" / "home").mkdir(parents=True, exist_ok=True)
        backoff = RESTART_FIRST_S
        while not stop.is_set():
            if self.address is None:
                await self._wait_any(stop, self._changed)
                continue
            self._changed.clear()
            address, started = self.address, time.monotonic()
            self.process = await processes.start(
                self.command(address),
                self.log_path,
                processes.flower_env(self.options.home / "flower" / "home"),
            )
            self.log(f"training plane: Flower SuperNode dialling {address}")
            exited = asyncio.create_task(self.process.wait())
            await self._wait_any(stop, self._changed, exited)
            if not exited.done():
                exited.cancel()
                await processes.stop(self.process)
                continue  # stopped, or a new address: no backoff
            if time.monotonic() - started > HEALTHY_AFTER_S:
                backoff = RESTART_FIRST_S
            self.log(f"training plane: SuperNode exited with code {self.process.returncode}; "
                     f"restarting in {backoff:.0f} s (log: {self.log_path})")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_any(stop, self._changed), backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)
        await processes.stop(self.process)

    @staticmethod
    async def _wait_any(*waits) -> None:  # type: ignore[no-untyped-def]
        tasks = [w if isinstance(w, asyncio.Task) else asyncio.create_task(w.wait()) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task, w in zip(tasks, waits, strict=True):
                if task is not w:
                    task.cancel()
