"""Child processes that hub and node supervise (Flower's SuperLink and SuperNode).

Shared here because the hub never imports `node` nor the node `hub`, and both run Flower the
same way: with our venv's tools first on PATH (Flower starts its helpers by name), telemetry
and update checks off, their own FLWR_HOME, in their own process group (so stopping one stops
the helpers it started), and dying with their parent (a supervisor killed outright leaves no
orphan holding a port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

STOP_GRACE_S = 5.0


def flower_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    # A SuperExec asks the Runtime API of its SuperNode or SuperLink, on the same machine, for a
    # task (a message's ClientApp, a run's ServerApp) every second by default, and every message
    # of a round waits for that poll on each node: five local requests a second take 0.4 s off
    # the average wait of each.
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def tool(name: str) -> str:
    """A console script installed beside the running Python."""
    return os.path.join(os.path.dirname(sys.executable), name)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# The first moments of every child: ask the kernel for SIGTERM when the supervisor dies, give
# up if it already has, then become the real program. A shim rather than `preexec_fn`, because a
# Python callback between fork and exec makes CPython fork (not vfork), and a fork of a process
# whose gRPC threads are busy can abort in gRPC's fork handlers before the program ever starts
# (seen: a node's SuperNode exiting with SIGABRT at every restart).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


async def start(cmd: list[str], log_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `cmd` (an absolute path first) in its own process group, appending its output to
    `log_path`; it dies with this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shim = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
    with open(log_path, "ab") as out:
        return await asyncio.create_subprocess_exec(
            *shim, *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            start_new_session=True,
        )  # fmt: skip


async def stop(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
