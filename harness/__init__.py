"""Starting real hubs and nodes on this machine, as a user starts them: the one process harness
of the tests, the benchmarks, `make demo` and `make eval`. Not installed with the project.

    hub = Hub(work / "hub")
    node = Node(work / "node", model_folder, hub, hub.token("law"))
    hub.wait_connected([node.node_id])
    text, switches, result = ask(hub, "The licensor grants you ...", max_tokens=20)
"""

from harness.machine import machine
from harness.network import Hub, Node, ask, refine, wait_trainable
from harness.processes import BIN, ENV, HarnessError, Process, cli, free_port

__all__ = [
    "BIN", "ENV", "HarnessError", "Hub", "Node", "Process", "ask", "cli", "free_port", "machine",
    "refine", "wait_trainable",
]  # fmt: skip
