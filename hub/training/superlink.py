"""The training plane's server: `slm-hub serve` runs Flower's SuperLink beside the routing plane.

Why a supervised child process: the SuperLink is Flower's own server (Fleet, Control and
Runtime HTTP APIs, plus the SuperExec that launches ServerApps), run as Flower's app in
`locked_superlink`, which keeps every API on loopback, serves only the Fleet API on the public
port nodes dial, and lets only the hub's secret call the Control API. The hub decides how it is
started (TLS with the hub's certificate, SuperNode authentication on, state in the hub home so
a restart does not orphan nodes, no runtime dependency installation, no telemetry, its own
FLWR_HOME), restarts it with backoff when it exits, and stops it with the hub.

A node admitted on the routing plane gets its public key registered here, so the SuperNode it
starts with the same key is let in; nothing else may join the training plane, and a revoked
node's key is taken off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hub.tls import TLSFiles
from hub.training.locked_superlink import MIN_TOKEN_BYTES, PUBLIC_FLAG, TOKEN_ENV
from slm import processes
from slm.atomic import atomic_write_bytes
from slm.errors import SLMError

log = logging.getLogger("slm-hub")

READY_TIMEOUT_S = 60.0
RESTART_FIRST_S, RESTART_MAX_S = 1.0, 30.0
HEALTHY_AFTER_S = 60.0  # a SuperLink that ran this long restarts without accumulated backoff
ALREADY_REGISTERED = 412  # what the Control API answers for a public key it knows
NOT_FOUND = 404  # ... and for a node id it does not know (already unregistered)
# The ServerApp (started by the SuperLink's SuperExec) finds the hub here: never in the run
# config, which Flower hands to every SuperNode.
HOME_ENV, DB_ENV = "SLM_HUB_TRAINING_HOME", "SLM_HUB_TRAINING_DB"


@dataclass(frozen=True)
class SuperLinkOptions:
    host: str
    port: int  # the Fleet API, where nodes dial; 0 picks a free one
    insecure: bool  # plaintext (a loopback hub); else TLS with the hub's certificate


def address_path(home: Path) -> Path:
    """Where a serving hub says how to reach its SuperLink (for `slm-hub train`)."""
    return home / "flower" / "superlink.json"


def token_path(home: Path) -> Path:
    """The Control API's secret: whoever reads it can start runs (the hub's user only)."""
    return home / "flower" / "control_token"


def ensure_token(home: Path) -> Path:
    """The Control API's secret, made (or remade, when too short to be one) readable by the
    hub's user alone."""
    path = token_path(home)
    try:
        good = len(path.read_bytes().strip()) >= MIN_TOKEN_BYTES
    except FileNotFoundError:
        good = False
    if not good:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, secrets.token_urlsafe(48).encode(), mode=0o600)
    path.chmod(0o600)
    return path


def ensure_superexec_secret(home: Path) -> Path:
    """What the ServerApp launcher proves itself with to the SuperLink's Runtime API (raw
    bytes, 0600), so no other local user takes a run's ServerApp task."""
    path = home / "flower" / "superexec_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, secrets.token_bytes(32), mode=0o600)
    return path


class _Bearer:
    """Sends the hub's secret with every Control API call (a Flower HTTP interceptor)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def intercept(self, context, call_next):  # type: ignore[no-untyped-def]
        context.request.headers["Authorization"] = f"Bearer {self.token}"
        return call_next(context)


def control_client(home: Path, address: str, insecure: bool):  # type: ignore[no-untyped-def]
    """A Control API client of the SuperLink at `address` (blocking calls)."""
    from flwr.supercore.control import ControlHttpClient

    try:
        token = token_path(home).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SLMError(f"no Control API secret at {token_path(home)}; is a hub serving from "
                       f"{home}?") from None  # fmt: skip
    ca = None if insecure else TLSFiles(home).ca_cert.read_bytes()
    return ControlHttpClient.from_server_address(
        address, insecure=insecure, root_certificates=ca, interceptors=[_Bearer(token)]
    )


def served_db_url(home: Path) -> str | None:
    """The database the hub serving from `home` uses (its --db may not be in hub.toml)."""
    try:
        return json.loads(address_path(home).read_text(encoding="utf-8")).get("db_url")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def running_control_client(home: Path):  # type: ignore[no-untyped-def]
    """A Control API client of the SuperLink the hub serving from `home` runs."""
    try:
        info = json.loads(address_path(home).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        raise SLMError(
            f"no hub is serving from {home}: start it with `slm-hub serve --home {home}`"
        ) from None
    return control_client(home, info["address"], bool(info["insecure"]))


class SuperLink:
    def __init__(self, home: Path, options: SuperLinkOptions, db_url: str) -> None:
        self.home = home
        self.options = options
        self.db_url = db_url
        self.port = options.port or processes.free_port(options.host)  # the public Fleet API
        self.local_port = 0  # every API, for the hub only: a new free port at every start
        self.address = ""  # the Control API's, once started
        self.state_dir = home / "flower"
        self.log_path = home / "logs" / "superlink.log"
        self.ready = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        host = self.options.host
        public = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        cmd = [
            sys.executable, "-m", "hub.training.locked_superlink", PUBLIC_FLAG, public,
            "--host", "127.0.0.1", "--port", str(self.local_port),
            "--database", str(self.state_dir / "state.db"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--isolation", "process",
            "--superexec-auth-secret-file", str(ensure_superexec_secret(self.home).resolve()),
        ]  # fmt: skip
        if self.options.insecure:
            return [*cmd, "--insecure"]
        tls = TLSFiles(self.home)
        return [
            *cmd, "--ssl-certfile", str(tls.server_cert), "--ssl-keyfile", str(tls.server_key),
            "--ssl-ca-certfile", str(tls.ca_cert),
        ]  # fmt: skip

    def control(self):  # type: ignore[no-untyped-def]
        """A Control API client (blocking; call it from a worker thread)."""
        return control_client(self.home, self.address, self.options.insecure)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep a SuperLink running until `stop` is set, then stop it."""
        (self.state_dir / "home").mkdir(parents=True, exist_ok=True)
        backoff = RESTART_FIRST_S
        while not stop.is_set():
            started = time.monotonic()
            # a new loopback port each time: a local user who took the last one cannot keep the
            # training plane down
            self.local_port = processes.free_port("127.0.0.1")
            self.address = f"127.0.0.1:{self.local_port}"
            env = processes.flower_env(self.state_dir / "home")
            env.update({HOME_ENV: str(self.home.resolve()), DB_ENV: self.db_url,
                        TOKEN_ENV: str(ensure_token(self.home).resolve())})  # fmt: skip
            self.process = await processes.start(self.command(), self.log_path, env)
            waiter = asyncio.create_task(self._until_ready())
            exited = asyncio.create_task(self.process.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            self.ready.clear()
            if stopping.done():
                exited.cancel()
                address_path(self.home).unlink(missing_ok=True)
                await processes.stop(self.process)
                return
            stopping.cancel()
            if time.monotonic() - started > HEALTHY_AFTER_S:
                backoff = RESTART_FIRST_S
            log.warning("Flower SuperLink exited with code %s; restarting in %.0f s (log: %s)",
                        self.process.returncode, backoff, self.log_path)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self._answers):
                where = {"address": self.address, "insecure": self.options.insecure,
                         "db_url": self.db_url}  # fmt: skip
                # 0600: the database URL may hold a password
                atomic_write_bytes(address_path(self.home), json.dumps(where).encode(), mode=0o600)
                self.ready.set()
                log.info("training plane: Flower SuperLink with the Fleet API for nodes on "
                         "%s:%d, every API for the hub on %s (state %s)", self.options.host,
                         self.port, self.address, self.state_dir / "state.db")  # fmt: skip
                return
            await asyncio.sleep(0.25)
        log.error("Flower SuperLink did not answer on %s within %.0f s; see %s",
                  self.address, READY_TIMEOUT_S, self.log_path)  # fmt: skip

    def _answers(self) -> bool:
        from flwr.proto.control_pb2 import ListNodesRequest

        try:
            client = self.control()
            try:
                client.ListNodes(ListNodesRequest())
            finally:
                client.close()
        except Exception:  # not up yet: connection refused, TLS handshake on a closing port ...
            return False
        return True

    def register(self, public_key_openssh: str, name: str) -> int:
        """Let the SuperNode holding this key in; its Flower node id (known keys: the same id).

        Blocking: call it from a worker thread, once `ready` is set.
        """
        import httpx
        from cryptography.hazmat.primitives import serialization
        from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        public = serialization.load_ssh_public_key(public_key_openssh.encode())
        pem = public_key_to_bytes(public)  # type: ignore[arg-type]
        client = self.control()
        try:
            try:
                reply = client.RegisterNode(RegisterNodeRequest(public_key=pem, name=name))
                return int(reply.node_id)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != ALREADY_REGISTERED:
                    raise
            for info in client.ListNodes(ListNodesRequest()).nodes_info:
                if info.public_key.strip() == pem.strip():
                    return int(info.node_id)
            raise RuntimeError("the SuperLink says the key is registered but does not list it")
        finally:
            client.close()

    def unregister(self, flower_node_id: int) -> None:
        """Take a node's key off the training plane: its SuperNode is let in no more (a key
        already gone is no error). Blocking: call it from a worker thread, once `ready` is set.
        """
        import httpx
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        client = self.control()
        try:
            client.UnregisterNode(UnregisterNodeRequest(node_id=flower_node_id))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != NOT_FOUND:
                raise
        finally:
            client.close()
