"""The training plane's deployment with real processes: `slm-hub serve` runs and supervises a
Flower SuperLink locked to the hub and registers each admitted node's key there; `slm-node
join` runs and supervises a `flower-supernode` with that key and a launcher that runs only the
project's app; only admitted keys get in, only the hub starts runs, and a node runs no other
bundle.

The tests share one hub and node and run in file order (the later ones kill processes).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest
from flwr.supercore.control import ControlHttpClient

from harness import BIN, Hub, Node, Process, cli, free_port, wait_trainable
from hub.training.runs import submit
from hub.training.superlink import control_client
from protos import training_app

pytestmark = pytest.mark.slow  # real hub, node and Flower processes

SUPERLINK = "hub.training.locked_superlink"  # the hub's SuperLink process


def child_named(
    parent: Process, name: str, not_pid: int = 0, recursive: bool = False
) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(parent.proc.pid).children(recursive=recursive):
            if child.pid != not_pid and any(name in part for part in child.cmdline()):
                return child
        time.sleep(0.1)
    raise AssertionError(f"{parent.args[:2]} runs no {name}:\n{parent.output}")


def wait_online(hub: Hub, superlink: str, flower_id: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = flower_nodes(hub, superlink)[flower_id].status
        except Exception:  # the SuperLink is restarting
            status = "unreachable"
        if status == "online":
            return
        assert time.monotonic() < deadline, f"node {flower_id} is {status}"
        time.sleep(0.2)


def hub_api(hub: Hub) -> str:
    """Where the hub's SuperLink serves every API now (a new loopback port at each start)."""
    return re.findall(r"every API for the hub on (127\.0\.0\.1:\d+)", hub.output)[-1]


def flower_nodes(hub: Hub, address: str) -> dict[int, object]:
    """The SuperLink's nodes, asked as the hub asks: with its secret, on loopback."""
    client = control_client(hub.home, address, insecure=False)
    try:
        return {n.node_id: n for n in client.ListNodes(ListNodesRequest()).nodes_info}
    finally:
        client.close()


def wait_registered(hub: Hub, node_id: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flower_id = hub.nodes()[node_id].flower_node_id
        if flower_id:
            return flower_id
        time.sleep(0.2)
    raise AssertionError(f"node {node_id} was not registered on the training plane:\n{hub.output}")


def supernode(home: Path, key: Path, hub: Hub, superlink: str) -> Process:
    return Process([
        "flower-supernode", "--superlink", superlink, "--root-certificates", str(hub.ca),
        "--auth-supernode-private-key", str(key), "--port", str(free_port()),
        "--max-retries", "3",
    ], home.with_name(f"{home.name}.log"),
       env={"FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})  # fmt: skip


@pytest.fixture(scope="module")
def hub_and_node(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("training-plane")
    hub = Hub(root / "hub")
    node = Node(root / "node", trained["law"].folder, hub, hub.token("law"))
    hub.wait_connected([node.node_id])
    fleet, control = hub.wait_for(
        r"Fleet API for nodes on (\S+), every API for the hub on (127\.0\.0\.1:\d+)"
    ).groups()
    yield hub, node, (fleet, control), root
    for process in (node, hub):
        process.stop()


def test_the_node_is_registered_and_its_own_supernode_comes_online(hub_and_node) -> None:
    hub, node, (fleet, superlink), root = hub_and_node
    flower_id = wait_registered(hub, node.node_id)
    assert (hub.home / "flower" / "state.db").is_file()  # state survives a hub restart
    listed = flower_nodes(hub, superlink)[flower_id]
    node_key = serialization.load_ssh_public_key((root / "node" / "node_key.pub").read_bytes())
    assert serialization.load_pem_public_key(listed.public_key) == node_key
    assert listed.name == node.node_id
    node.wait_for(rf"training plane: Flower SuperNode dialling {fleet}")
    wait_online(hub, superlink, flower_id)  # slm-node join's SuperNode, with the node's key
    child_named(node, "flower-supernode")
    child_named(node, "node.pinned_exec")


def test_a_key_the_hub_never_admitted_is_refused(hub_and_node) -> None:
    hub, _, (fleet, superlink), root = hub_and_node
    stranger = root / "stranger"
    cli("slm-node", "init", "--home", str(stranger), check=True)
    refused = supernode(root / "sn-stranger", stranger / "node_key", hub, fleet)
    assert refused.proc.wait(60) != 0
    assert "Failed to activate SuperNode" in refused.output
    assert len(flower_nodes(hub, superlink)) == 1  # only the admitted node


def foreign_bundle(marker: Path) -> bytes:
    """An app bundle carrying its own ServerApp and ClientApp modules, as an attacker builds
    one: each writes a marker file if it ever runs; the ServerApp sends every node a message."""
    from flwr.cli.build import build_fab_from_files

    pyproject = training_app.pyproject(
        "innocent", "someone", {"serverapp": "evil_server:app", "clientapp": "evil_client:app"}, {}
    )
    server = f"""\
from pathlib import Path
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import ServerApp
app = ServerApp()
@app.main()
def main(grid, context):
    Path({str(marker)!r} + ".server").write_text("ran")
    messages = [Message(content=RecordDict({{"config": ConfigRecord({{"x": 1}})}}), dst_node_id=n,
                        message_type=MessageType.TRAIN) for n in grid.get_node_ids()]
    list(grid.send_and_receive(messages, timeout=60))
"""
    client = f"""\
from pathlib import Path
from flwr.clientapp import ClientApp
app = ClientApp()
@app.train()
def train(message, context):
    Path({str(marker)!r} + ".client").write_text("ran")
    return message.create_reply(message.content)
"""
    files = {"pyproject.toml": pyproject, "evil_server.py": server, "evil_client.py": client}
    return build_fab_from_files({k: v.encode() for k, v in files.items()})[0]


def outsider(address: str, hub: Hub, token: str | None = None) -> ControlHttpClient:
    """A Control API client holding only the public CA (and a guessed token, if given)."""

    class Guess:
        def intercept(self, context, call_next):  # type: ignore[no-untyped-def]
            context.request.headers["Authorization"] = f"Bearer {token}"
            return call_next(context)

    return ControlHttpClient.from_server_address(
        address, insecure=False, root_certificates=hub.ca.read_bytes(),
        interceptors=[Guess()] if token else [],
    )  # fmt: skip


def test_an_outsider_holding_the_ca_can_neither_start_a_run_nor_register_a_node(
    hub_and_node, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    hub, _, (fleet, control), root = hub_and_node
    marker = tmp_path / "pwned"
    stranger = root / "stranger-2"
    cli("slm-node", "init", "--home", str(stranger), check=True)
    pem = serialization.load_ssh_public_key((stranger / "node_key.pub").read_bytes()).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    before = flower_nodes(hub, control)
    refusals = {}
    for name, client in (
        ("public port", outsider(fleet, hub)),  # the port nodes dial: Fleet only
        ("loopback, no token", outsider(control, hub)),  # a local user
        ("loopback, a guessed token", outsider(control, hub, token="x" * 64)),
    ):
        try:
            for call in (
                lambda: submit(client, foreign_bundle(marker), {}),  # noqa: B023
                lambda: client.RegisterNode(RegisterNodeRequest(public_key=pem, name="mine")),  # noqa: B023
            ):
                with pytest.raises(httpx.HTTPStatusError) as refused:
                    call()
                refusals.setdefault(name, set()).add(refused.value.response.status_code)
        finally:
            client.close()
    assert refusals == {"public port": {404}, "loopback, no token": {401},
                        "loopback, a guessed token": {401}}  # fmt: skip
    with httpx.Client(verify=ssl_context(hub)) as http:  # the rest of Flower: not public either
        for path in ("/v1/runtime/acquire-task", "/docs", "/openapi.json",
                     "/v1/fleet/../control/list-nodes"):  # fmt: skip
            assert http.post(f"https://{fleet}{path}").status_code == 404, path
    time.sleep(2)
    assert not list(tmp_path.glob("pwned*")), "a foreign module ran"
    assert flower_nodes(hub, control).keys() == before.keys()  # nothing registered


def ssl_context(hub: Hub):  # type: ignore[no-untyped-def]
    import ssl

    return ssl.create_default_context(cafile=str(hub.ca))


def _wait_logged(path: Path, text: str, process: Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path} never said {text!r}:\n{process.output}"
        time.sleep(0.5)


def test_a_foreign_bundle_runs_neither_on_the_hub_nor_on_a_node(hub_and_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Even the hub's Control secret (leaked) does not run a foreign ServerApp on the hub; and a
    hub broken into (its SuperExec secret read, its own launcher stopped, a plain Flower
    SuperExec running the foreign ServerApp) cannot make a node run foreign code."""
    from flwr.proto.control_pb2 import StopRunRequest

    hub, node, (_, control), root = hub_and_node
    wait_trainable(hub, "law", 1)
    marker = tmp_path / "pwned"
    client = control_client(hub.home, control, insecure=False)
    try:
        run_id = submit(client, foreign_bundle(marker), {})
        _wait_logged(hub.home / "logs" / "superlink.log", training_app.REFUSED, hub)
        client.StopRun(StopRunRequest(run_id=run_id))
        assert not list(tmp_path.glob("pwned*")), "a foreign module ran on the hub"

        launcher = child_named(hub, "hub.training.serverapps", recursive=True)
        launcher.suspend()
        rogue = Process([
            "flower-superexec", "--runtime-api-address", control, "--root-certificates",
            str(hub.ca), "--superexec-auth-secret-file",
            str(hub.home / "flower" / "superexec_secret"),
        ], tmp_path / "rogue-superexec.log", env={
            "FLWR_HOME": str(tmp_path / "rogue-home"),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        })  # fmt: skip
        try:
            run_id = submit(client, foreign_bundle(marker), {})
            clientapps = root / "node" / "flower" / "clientapps.log"
            _wait_logged(clientapps, training_app.REFUSED, node)
            assert Path(f"{marker}.server").exists()  # the attack did reach the node ...
            time.sleep(2)
            assert not Path(f"{marker}.client").exists()  # ... and ran nothing there
            client.StopRun(StopRunRequest(run_id=run_id))
        finally:
            rogue.stop()
            launcher.resume()
    finally:
        client.close()


def test_a_superlink_that_dies_is_restarted_and_keeps_its_nodes(hub_and_node) -> None:
    hub, node, (_, superlink), _ = hub_and_node
    flower_id = wait_registered(hub, node.node_id)
    first = child_named(hub, SUPERLINK)
    seen = len(hub.lines)
    first.send_signal(signal.SIGKILL)
    hub.wait_for(r"Flower SuperLink exited with code -9; restarting", after=seen)
    superlink = hub.wait_for(r"every API for the hub on (127\.0\.0\.1:\d+)", after=seen).group(1)
    child_named(hub, SUPERLINK, not_pid=first.pid)
    assert flower_id in flower_nodes(hub, superlink)  # the registration was in its state file
    wait_online(hub, superlink, flower_id, timeout=90)  # the node's SuperNode is back


def test_a_supernode_that_dies_is_restarted(hub_and_node) -> None:
    hub, node, _, _ = hub_and_node
    superlink = hub_api(hub)  # the SuperLink restarted above, on a new loopback port
    flower_id = wait_registered(hub, node.node_id)
    first = child_named(node, "flower-supernode")
    seen = len(node.lines)
    first.send_signal(signal.SIGKILL)
    node.wait_for(r"SuperNode or its launcher exited \(codes -9, ", after=seen)
    child_named(node, "flower-supernode", not_pid=first.pid)
    wait_online(hub, superlink, flower_id)


def test_a_draining_node_stops_its_supernode(hub_and_node) -> None:
    _, node, _, _ = hub_and_node
    child = child_named(node, "flower-supernode")
    assert node.stop() == 0
    child.wait(10)  # raises psutil.TimeoutExpired if it outlives the node


def test_stopping_the_hub_stops_its_superlink(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub")
    hub.wait_for(r"training plane: Flower SuperLink with")
    child = child_named(hub, SUPERLINK)
    assert hub.stop() == 0
    child.wait(10)  # raises psutil.TimeoutExpired if it outlives the hub
    assert not child.is_running()
    assert re.search(r"hub stopped", hub.output)
