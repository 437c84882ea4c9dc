"""The training plane's deployment with real processes: `slm-hub serve` runs and supervises a
Flower SuperLink and registers each admitted node's key there; `slm-node join` runs and
supervises a `flower-supernode` with that key, and only admitted keys get in.

The tests share one hub and node and run in file order (the later ones kill processes).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from flwr.proto.control_pb2 import ListNodesRequest
from flwr.supercore.control import ControlHttpClient

from harness import BIN, Hub, Node, Process, cli, free_port

pytestmark = pytest.mark.slow  # real hub, node and Flower processes


def child_named(parent: Process, name: str, not_pid: int = 0) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(parent.proc.pid).children():
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


def flower_nodes(hub: Hub, address: str) -> dict[int, object]:
    client = ControlHttpClient.from_server_address(
        address, insecure=False, root_certificates=hub.ca.read_bytes(), interceptors=[]
    )
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
    superlink = hub.wait_for(r"Flower SuperLink on (127\.0\.0\.1:\d+)").group(1)
    yield hub, node, superlink, root
    for process in (node, hub):
        process.stop()


def test_the_node_is_registered_and_its_own_supernode_comes_online(hub_and_node) -> None:
    hub, node, superlink, root = hub_and_node
    flower_id = wait_registered(hub, node.node_id)
    assert (hub.home / "flower" / "state.db").is_file()  # state survives a hub restart
    listed = flower_nodes(hub, superlink)[flower_id]
    node_key = serialization.load_ssh_public_key((root / "node" / "node_key.pub").read_bytes())
    assert serialization.load_pem_public_key(listed.public_key) == node_key
    assert listed.name == node.node_id
    node.wait_for(rf"training plane: Flower SuperNode dialling {superlink}")
    wait_online(hub, superlink, flower_id)  # slm-node join's SuperNode, with the node's key
    child_named(node, "flower-supernode")


def test_a_key_the_hub_never_admitted_is_refused(hub_and_node) -> None:
    hub, _, superlink, root = hub_and_node
    stranger = root / "stranger"
    cli("slm-node", "init", "--home", str(stranger), check=True)
    refused = supernode(root / "sn-stranger", stranger / "node_key", hub, superlink)
    assert refused.proc.wait(60) != 0
    assert "Failed to activate SuperNode" in refused.output
    assert len(flower_nodes(hub, superlink)) == 1  # only the admitted node


def test_a_superlink_that_dies_is_restarted_and_keeps_its_nodes(hub_and_node) -> None:
    hub, node, superlink, _ = hub_and_node
    flower_id = wait_registered(hub, node.node_id)
    first = child_named(hub, "flower-superlink")
    seen = len(hub.lines)
    first.send_signal(signal.SIGKILL)
    hub.wait_for(r"Flower SuperLink exited with code -9; restarting", after=seen)
    hub.wait_for(r"training plane: Flower SuperLink on", after=seen)
    child_named(hub, "flower-superlink", not_pid=first.pid)
    assert flower_id in flower_nodes(hub, superlink)  # the registration was in its state file
    wait_online(hub, superlink, flower_id, timeout=90)  # the node's SuperNode is back


def test_a_supernode_that_dies_is_restarted(hub_and_node) -> None:
    hub, node, superlink, _ = hub_and_node
    flower_id = wait_registered(hub, node.node_id)
    first = child_named(node, "flower-supernode")
    seen = len(node.lines)
    first.send_signal(signal.SIGKILL)
    node.wait_for(r"SuperNode exited with code -9; restarting", after=seen)
    child_named(node, "flower-supernode", not_pid=first.pid)
    wait_online(hub, superlink, flower_id)


def test_a_draining_node_stops_its_supernode(hub_and_node) -> None:
    _, node, _, _ = hub_and_node
    child = child_named(node, "flower-supernode")
    assert node.stop() == 0
    child.wait(10)  # raises psutil.TimeoutExpired if it outlives the node


def test_stopping_the_hub_stops_its_superlink(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub")
    hub.wait_for(r"Flower SuperLink on")
    child = child_named(hub, "flower-superlink")
    assert hub.stop() == 0
    child.wait(10)  # raises psutil.TimeoutExpired if it outlives the hub
    assert not child.is_running()
    assert re.search(r"hub stopped", hub.output)
