"""The node's side of the training plane: `slm-node join` runs and supervises `flower-supernode`
and the launcher of its ClientApps.

The hub's welcome names the port of its Flower SuperLink; the SuperNode dials the same host the
node dialled, with the node's own key (the hub registered it on admission), the hub's CA, and a
`--node-config` that tells the ClientApp where the model, the data and the domain are. It runs
with `--isolation process`: its ClientApps are launched by `node.pinned_exec`, which runs only
the project's own app bundle, over the SuperNode's loopback Runtime API with a secret of the
node's. A SuperNode that exits (the SuperLink restarting, a registration that had not landed
yet) is restarted with backoff, its launcher with it; a new address (the hub came back on
another port) restarts both at once. Draining the node stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slm import processes
from slm.atomic import atomic_write_bytes
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
        self.exec_log_path = options.home / "flower" / "clientapps.log"
        self.launcher: asyncio.subprocess.Process | None = None

    def point_at(self, address: str) -> None:
        """The SuperLink to dial (from the hub's welcome); a change restarts the SuperNode."""
        if address != self.address:
            self.address = address
            self._changed.set()

    def command(self, address: str, runtime_port: int) -> list[str]:
        o = self.options
        cmd = [
            processes.tool("flower-supernode"), "--superlink", address,
            "--auth-supernode-private-key", str(o.key),
            "--node-config", node_config_arg(o.node_config),
            "--isolation", "process", "--port", str(runtime_port),
            "--superexec-auth-secret-file", str(self._secret()),
        ]  # fmt: skip
        if o.insecure:
            return [*cmd, "--insecure"]
        return [*cmd, "--root-certificates", str(o.ca)] if o.ca else cmd

    def launcher_command(self, runtime_port: int, supernode_pid: int) -> list[str]:
        """`node.pinned_exec` on the SuperNode's Runtime API; it exits with the SuperNode."""
        return [
            sys.executable, "-m", "node.pinned_exec",
            "--runtime-api-address", f"127.0.0.1:{runtime_port}", "--insecure",
            "--parent-pid", str(supernode_pid),
            "--superexec-auth-secret-file", str(self._secret()),
        ]  # fmt: skip

    def _secret(self) -> Path:
        """What the launcher proves itself with to the SuperNode's Runtime API, so no other
        local user takes the node's ClientApp tasks (read as raw bytes by Flower)."""
        path = self.options.home / "flower" / "superexec_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, secrets.token_bytes(32), mode=0o600)
        return path

    async def supervise(self, stop: asyncio.Event) -> None:
        (self.options.home / "flower" / "home").mkdir(parents=True, exist_ok=True)
        backoff = RESTART_FIRST_S
        while not stop.is_set():
            if self.address is None:
                await self._wait_any(stop, self._changed)
                continue
            self._changed.clear()
            address, started = self.address, time.monotonic()
            env = processes.flower_env(self.options.home / "flower" / "home")
            port = processes.free_port()
            self.process = await processes.start(self.command(address, port), self.log_path, env)
            self.launcher = await processes.start(
                self.launcher_command(port, self.process.pid), self.exec_log_path, env
            )
            self.log(f"training plane: Flower SuperNode dialling {address}")
            exited = asyncio.create_task(self.process.wait())
            launcher_exited = asyncio.create_task(self.launcher.wait())
            await self._wait_any(stop, self._changed, exited, launcher_exited)
            launcher_exited.cancel()
            await processes.stop(self.launcher)
            if not exited.done():
                exited.cancel()
                await processes.stop(self.process)
                if stop.is_set() or self._changed.is_set():
                    continue  # stopped, or a new address: no backoff
            if time.monotonic() - started > HEALTHY_AFTER_S:
                backoff = RESTART_FIRST_S
            self.log(f"training plane: SuperNode or its launcher exited (codes "
                     f"{self.process.returncode}, {self.launcher.returncode}); restarting in "
                     f"{backoff:.0f} s (logs: {self.log_path}, {self.exec_log_path})")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_any(stop, self._changed), backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)
        await processes.stop(self.launcher)
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
