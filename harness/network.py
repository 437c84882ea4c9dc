"""A hub and its nodes on 127.0.0.1: `slm-hub serve` and `slm-node join` processes, and the
client calls that talk to them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from harness.processes import HarnessError, Process, cli
from protos import swarm_pb2 as pb
from protos import swarm_pb2_grpc as rpc
from protos.wire import SamplingParams

FUNDS = "1000000"  # credits the harness grants the hub's admin key, once per home


class Hub(Process):
    """`slm-hub serve --home HOME` (TLS) on a free port unless told one; its SuperLink and HTTP
    API on free ports too, since hubs run side by side. Ready once it says where it listens.
    The calls below use the home's admin key, funded with `funds` credits on the first start
    (None: not funded)."""

    def __init__(
        self, home: Path, port: int = 0, *extra: str, log: Path | None = None,
        funds: str | None = FUNDS, env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        for flag in ("--flower-port", "--http-port"):
            if flag not in extra:
                extra = (flag, "0", *extra)
        args = ["slm-hub", "serve", "--home", str(home), "--port", str(port), *extra]
        super().__init__(args, log or home.with_name(f"{home.name}.log"), env)
        self.home = home
        self.port = int(self.wait_for(r"hub listening on 127\.0\.0\.1:(\d+)").group(1))
        self.address = f"127.0.0.1:{self.port}"
        scheme, http_port = self.wait_for(r"API on (https?)://127\.0\.0\.1:(\d+)/v1").groups()
        self.http_port = int(http_port)
        self.base_url = f"{scheme}://127.0.0.1:{self.http_port}/v1"
        self.ca = home / "ca.pem"
        self.key = (home / "api_key").read_text().strip()
        if funds is not None and not (home / ".harness-funded").exists():
            cli("slm-hub", "ledger", "grant", "admin", funds, "--home", str(home), "--ref",
                f"harness:{home}", check=True)  # fmt: skip
            (home / ".harness-funded").touch()
        self._channel: grpc.Channel | None = None
        self._channel_lock = threading.Lock()  # callers may ask from several threads

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]

    def new_key(
        self, name: str, credits: str | None = None, rate: int = 0, max_concurrent: int = 0
    ) -> str:
        """A new API key (no rate or concurrency limit unless told), funded with `credits`."""
        out = self.home / f"{name}.key"
        funded = ("--credits", credits) if credits else ()
        cli("slm-hub", "key", "create", "--name", name, "--home", str(self.home), "--out",
            str(out), "--rate", str(rate), "--max-concurrent", str(max_concurrent), *funded,
            check=True)  # fmt: skip
        return out.read_text().strip()

    def token(self, domain: str) -> str:
        """A fresh single-use join token for `domain`."""
        return cli("slm-hub", "token", "create", "--domain", domain, "--home", str(self.home),
                   check=True).stdout.strip()  # fmt: skip

    def channel(self) -> grpc.Channel:
        """One TLS channel to the hub, shared by every call of this harness."""
        with self._channel_lock:
            if self._channel is None:
                credentials = grpc.ssl_channel_credentials(self.ca.read_bytes())
                self._channel = grpc.secure_channel(self.address, credentials)
            return self._channel

    def swarm(self) -> rpc.SwarmStub:
        return rpc.SwarmStub(self.channel())

    def nodes(self) -> dict[str, pb.NodeInfo]:
        reply = self.swarm().ListNodes(pb.ListNodesRequest(), metadata=self.metadata)
        return {n.node_id: n for n in reply.nodes}

    def balance(self, node_id: str) -> int:
        """A node's balance in micro-credits, as the admin key reads it; 0 if never paid."""
        try:
            request = pb.BalanceRequest(node_id=node_id)
            return self.swarm().Balance(request, metadata=self.metadata).micro_credits
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: no account yet
                raise
            return 0

    def inference(self, request_id: str) -> tuple[str, list[dict]]:
        """An answer's ledger record: its outcome and its paid segments."""
        with sqlite3.connect(self.home / "hub.db") as db:
            outcome, segments = db.execute(
                "SELECT outcome, segments FROM inferences WHERE request_id = ?", (request_id,)
            ).fetchone()
        return outcome, json.loads(segments)

    def verify_ledger(self) -> None:
        """`slm-hub ledger verify` on the hub's home; HarnessError unless every entry checks."""
        verified = cli("slm-hub", "ledger", "verify", "--home", str(self.home))
        if verified.returncode != 0:
            raise HarnessError(f"the ledger does not verify: {verified.stderr}")

    def stop(self, timeout: float = 20.0) -> int:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return super().stop(timeout)

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
        raise HarnessError(f"nodes {node_ids} did not connect; the hub said:\n{self.output}")


class Node(Process):
    """`slm-node init` (once) and `slm-node join` of `model` to `hub`, one torch thread (nodes
    share the machine's cores). Returns at once; `wait_for("joined")` waits for the hub's
    welcome."""

    def __init__(
        self, home: Path, model: Path, hub: Hub, token: str, *extra: str, log: Path | None = None
    ) -> None:
        if not (home / "node_key").exists():
            cli("slm-node", "init", "--home", str(home), check=True)
        super().__init__([
            "slm-node", "join", "--home", str(home), "--model", str(model), "--hub", hub.address,
            "--token", token, "--ca", str(hub.ca), "--threads", "1", *extra,
        ], log or home.with_name(f"{home.name}.log"))  # fmt: skip
        self.home = home
        self._node_id = ""

    @property
    def node_id(self) -> str:
        """Its id, once it has loaded its model and said so (nodes start side by side)."""
        if not self._node_id:
            self._node_id = self.wait_for(r"node ([0-9a-f]{32}):", timeout=180).group(1)
        return self._node_id


def ask(
    hub: Hub, prompt: str, key: str = "", domain: str = "", idempotency_key: str = "",
    **sampling: Any,
) -> tuple[str, list[pb.Switched], pb.AskResult]:  # fmt: skip
    """One Ask with `key` (default: the hub's admin key), in the hub's default mode: (the
    answer, its fail-over notes, its result). Greedy unless told otherwise, so an answer is
    repeatable."""
    text, switches, _, result = refine(hub, prompt, key, domain, idempotency_key, **sampling)
    return text, switches, result


def refine(
    hub: Hub, prompt: str, key: str = "", domain: str = "", idempotency_key: str = "",
    mode: str = "", draft: str = "", timeout: float = 120.0, **sampling: Any,
) -> tuple[str, list[pb.Switched], pb.Drafted | None, pb.AskResult]:  # fmt: skip
    """One Ask as `ask` does, with a mode ("direct", "refine", "": the hub's) and the caller's
    own draft: (the answer, its fail-over notes, the draft refined if any, its result)."""
    params = SamplingParams(**{"temperature": 0.0, **sampling})
    modes = {"": pb.MODE_DEFAULT, "direct": pb.MODE_DIRECT, "refine": pb.MODE_REFINE}
    request = pb.AskRequest(prompt=prompt, sampling=params.to_proto(), domain=domain,
                            mode=modes[mode], draft=draft)  # fmt: skip
    metadata = [("authorization", f"Bearer {key or hub.key}")]
    if idempotency_key:
        metadata.append(("idempotency-key", idempotency_key))
    text, switches, drafted, result = [], [], None, None
    for reply in hub.swarm().Ask(request, timeout=timeout, metadata=metadata):
        kind = reply.WhichOneof("body")
        if kind == "text":
            text.append(reply.text)
        elif kind == "switched":
            switches.append(reply.switched)
        elif kind == "drafted":
            drafted = reply.drafted
        else:
            result = reply.result
    if result is None:
        raise HarnessError("the hub ended the answer without a result")
    return "".join(text), switches, drafted, result


# A check is an `slm-hub` process, up to 1 s of one core: asked more often, it takes the CPU
# that the nodes it waits for need to start.
CHECK_EVERY_S = 2.0


def wait_trainable(hub: Hub, domain: str, count: int, timeout: float = 120.0) -> None:
    """Until `count` of the domain's nodes are ready to train (registered on the training
    plane, their SuperNodes online), as `slm-hub train --check` says."""
    deadline = time.monotonic() + timeout
    while True:
        check = cli("slm-hub", "train", "--check", "--home", str(hub.home), "--domain", domain,
                    "--min-nodes", str(count))  # fmt: skip
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"{domain} nodes not ready to train: {check.stdout}{check.stderr}")
        time.sleep(CHECK_EVERY_S)
