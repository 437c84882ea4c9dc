"""`make demo`: a hub and four domain nodes as separate processes on this machine.

Trains three slm-demo models on the shipped corpora once (about a minute each on 2 cores, kept
in demo-home/), starts `slm-hub serve` and four `slm-node join` processes exactly as a user
would (medicine, religion, and two law nodes that start from one law model and each hold half
of the law corpus), asks one prompt per domain through `slm-hub ask` (which streams the answer
and shows where it went and why), runs one federated round of the two law nodes with
`slm-hub train`, then shows the nodes' model versions and balances and verifies the ledger.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from protos import swarm_pb2 as pb  # noqa: E402
from protos import swarm_pb2_grpc as rpc  # noqa: E402
from slm.config import get_preset  # noqa: E402
from slm.errors import SLMError  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.train import read_corpus, train  # noqa: E402

HOME = ROOT / "demo-home"
BIN = Path(sys.executable).parent
DOMAINS = ("medicine", "law", "religion")
PROMPTS = {
    "medicine": "Acute and subacute allergic otitis media, recurrent, left ear",
    "law": "The licensor grants you a worldwide, royalty-free, non-exclusive license",
    "religion": "And the LORD spake unto Moses, saying, Speak unto the children of Israel",
}
console = Console()


def ensure_model(domain: str) -> Path:
    folder = HOME / domain
    try:
        load_model_folder(folder)
        return folder
    except SLMError:
        pass
    preset = get_preset("slm-demo")
    console.print(f"[bold]training[/] the {domain} node ({preset.summary})")
    train(
        read_corpus(ROOT / "data" / "corpora" / f"{domain}.txt"), domain, folder,
        preset.model, preset.train,
        on_eval=lambda r: console.print(
            f"  step {r['step']}/{r['total_steps']}  validation loss {r['val_loss']:.3f}"
        ),
    )  # fmt: skip
    return folder


def cli(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], check=True, text=True,
                          capture_output=capture)  # fmt: skip


def start(*args: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 (the process writes it until the demo ends)
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"demo: {text!r} never appeared in {log}:\n{log.read_text()}")


def law_halves() -> tuple[Path, Path]:
    """Each law node's own data: half of the shipped law corpus."""
    text = read_corpus(ROOT / "data" / "corpora" / "law.txt")
    cut = text.rfind("\n", 0, len(text) // 2)
    halves = HOME / "data" / "law-a.txt", HOME / "data" / "law-b.txt"
    halves[0].parent.mkdir(parents=True, exist_ok=True)
    for path, part in zip(halves, (text[:cut], text[cut + 1 :]), strict=True):
        if not path.exists():
            path.write_text(part, encoding="utf-8")
    return halves


def wait_trainable(hub_home: Path, domain: str, count: int, timeout: float = 90) -> None:
    """Both law nodes registered on the training plane, their SuperNodes online."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [str(BIN / "slm-hub"), "train", "--home", str(hub_home), "--domain", domain,
             "--min-nodes", str(count + 1)], capture_output=True, text=True,
        )  # fmt: skip
        if f"{count} {domain} node(s) connected for training" in probe.stderr:
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: the {domain} nodes did not come online for training")


def main() -> None:
    folders = {d: ensure_model(d) for d in DOMAINS}
    if not (HOME / "law-2").exists():  # the second law node starts from the same model
        shutil.copytree(folders["law"], HOME / "law-2")
    halves = law_halves()
    nodes = [  # (node home, model folder, its --data, if it trains)
        ("medicine-node", folders["medicine"], None),
        ("law-node", folders["law"], halves[0]),
        ("law-2-node", HOME / "law-2", halves[1]),
        ("religion-node", folders["religion"], None),
    ]
    hub_home, logs = HOME / "hub", HOME / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    processes: list[subprocess.Popen] = []
    try:
        hub = start("slm-hub", "serve", "--home", str(hub_home), "--port", address.split(":")[1],
                    "--flower-port", "0", log=logs / "hub.log")  # fmt: skip
        processes.append(hub)
        wait_for(logs / "hub.log", "hub listening", hub)
        console.print(f"[bold]hub[/] serving on {address} (TLS), log {logs / 'hub.log'}")
        for name, folder, data in nodes:
            node_home = HOME / name
            if not (node_home / "node_key").exists():
                cli("slm-node", "init", "--home", str(node_home), capture=True)
            domain = name.split("-")[0]
            token = cli("slm-hub", "token", "create", "--domain", domain, "--home",
                        str(hub_home), capture=True).stdout.strip()  # fmt: skip
            node = start("slm-node", "join", "--home", str(node_home), "--model", str(folder),
                         "--hub", address, "--token", token, "--ca", str(hub_home / "ca.pem"),
                         "--threads", "1", *(("--data", str(data)) if data else ()),
                         log=logs / f"{name}.log")  # fmt: skip
            processes.append(node)
        for (name, _, _), node in zip(nodes, processes[1:], strict=True):
            wait_for(logs / f"{name}.log", "joined", node)
        wait_connected(address, hub_home / "ca.pem", len(nodes))
        cli("slm-hub", "nodes", "--hub", address, "--home", str(hub_home))
        for prompt in PROMPTS.values():
            console.rule(f"[bold]slm-hub ask[/] {prompt!r}")
            sampling = ("--max-tokens", "40", "--temperature", "0.7", "--top-k", "40")
            cli("slm-hub", "ask", prompt, "--hub", address, "--home", str(hub_home), *sampling)
        console.rule("[bold]slm-hub train[/]: the two law nodes train together")
        wait_trainable(hub_home, "law", 2)
        cli("slm-hub", "train", "--home", str(hub_home), "--domain", "law", "--rounds", "1",
            "--local-steps", "10", "--timeout", "300")  # fmt: skip
        time.sleep(2)  # the nodes swap the new model in and heartbeat its version
        cli("slm-hub", "nodes", "--hub", address, "--home", str(hub_home))
        console.rule("[bold]the reward ledger[/]")
        cli("slm-hub", "ledger", "balance", "--home", str(hub_home))
        cli("slm-hub", "ledger", "verify", "--home", str(hub_home))
        console.print(
            f"Logs of the hub and each node are in {logs}. Run the network yourself:\n"
            f"  .venv/bin/slm-hub serve --home {hub_home}\n"
            f"  .venv/bin/slm-node join --home {HOME / 'law-node'} --model {folders['law']} "
            f"--hub 127.0.0.1:7443 --ca {hub_home / 'ca.pem'}"
        )
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_connected(address: str, ca: Path, count: int, timeout: float = 60) -> None:
    stub = rpc.SwarmStub(
        grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes()))
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = stub.ListNodes(pb.ListNodesRequest(), timeout=10).nodes
        if sum(n.connected for n in nodes) >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: {count} nodes did not connect to the hub at {address}")


if __name__ == "__main__":
    main()
