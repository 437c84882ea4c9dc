"""Real hub and node processes on 127.0.0.1, as a user starts them, for integration tests.

Each process's output is read by a thread into a list of lines, so a test can wait for a line
("hub listening", "joined") and a full pipe never blocks the process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc

from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from tests.conftest import BIN

ENV = {
    **os.environ, "PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**ENV, **(env or {})},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match:
        """The first output line (from line `after` on) matching `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(5)  # everything it wrote is in self.lines
            for line in self.lines[after:]:
                if m := re.search(pattern, line):
                    return m
            if exited or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} from {self.args[:2]}:\n{self.output}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Hub(Process):
    def __init__(self, home: Path, port: int = 0, *extra: str) -> None:
        if "--flower-port" not in extra:  # tests run side by side: no fixed SuperLink port
            extra = ("--flower-port", "0", *extra)
        super().__init__(["slm-hub", "serve", "--home", str(home), "--port", str(port), *extra])
        self.home = home
        self.port = int(self.wait_for(r"hub listening on 127\.0\.0\.1:(\d+)").group(1))
        self.address = f"127.0.0.1:{self.port}"
        self.ca = home / "ca.pem"

    def token(self, domain: str) -> str:
        done = subprocess.run(
            [str(BIN / "slm-hub"), "token", "create", "--domain", domain, "--home", str(self.home)],
            capture_output=True, text=True, env=ENV, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    def channel(self) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(self.ca.read_bytes())
        return grpc.secure_channel(self.address, creds)

    def swarm(self) -> rpc.SwarmStub:
        return rpc.SwarmStub(self.channel())

    def nodes(self) -> dict[str, pb.NodeInfo]:
        return {n.node_id: n for n in self.swarm().ListNodes(pb.ListNodesRequest()).nodes}

    def wait_connected(self, node_ids: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                known = self.nodes()
            except grpc.RpcError:
                known = {}
            if all(i in known and known[i].connected for i in node_ids):
                return
            time.sleep(0.1)
        raise AssertionError(f"nodes {node_ids} did not connect; hub said:\n{self.output}")


class Node(Process):
    def __init__(self, home: Path, model: Path, hub: Hub, token: str, *extra: str) -> None:
        if not (home / "node_key").exists():
            subprocess.run([str(BIN / "slm-node"), "init", "--home", str(home)], check=True,
                           capture_output=True, env=ENV)  # fmt: skip
        super().__init__([
            "slm-node", "join", "--home", str(home), "--model", str(model), "--hub", hub.address,
            "--token", token, "--ca", str(hub.ca), "--threads", "1", *extra,
        ])  # fmt: skip
        self.node_id = self.wait_for(r"node ([0-9a-f]{32}):").group(1)


def ask(hub: Hub, prompt: str, **params) -> tuple[str, list[pb.Switched], pb.AskResult]:  # type: ignore[no-untyped-def]
    text, switches, result = [], [], None
    for reply in hub.swarm().Ask(pb.AskRequest(prompt=prompt, **params), timeout=120):
        kind = reply.WhichOneof("body")
        if kind == "text":
            text.append(reply.text)
        elif kind == "switched":
            switches.append(reply.switched)
        else:
            result = reply.result
    assert result is not None
    return "".join(text), switches, result
