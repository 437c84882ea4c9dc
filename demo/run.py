"""`make demo`: a hub, a generalist and four domain nodes as separate processes on this machine.

Trains three domain adapters on the embedded pretrained base (SmolLM2-135M-Instruct) from the
shipped corpora once (about a minute each on 2 cores, kept in demo-home/) and imports the base
whole as the generalist, starts `slm-hub serve` and five `slm-node join` processes exactly as a
user would (the generalist, medicine, religion, and two law nodes that start from one law model
and each hold half of the law corpus, each domain node with its text as `--reference`), asks
one prompt per domain through `slm-hub ask` (the generalist drafts, the most confident domain
node refines with what its text says; the command streams the answer and shows who drafted,
where it went and why), runs one federated round of the two law nodes with
`slm-hub train`, then shows the nodes' model versions and balances and verifies the ledger.
Clients ask with an API key: the demo makes one for itself (demo-home/demo.key, 100 credits),
asks with it, and asks once more through the OpenAI-compatible HTTP API with `curl`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import HarnessError, Hub, Node, cli, wait_trainable  # noqa: E402
from harness.processes import stop_all  # noqa: E402
from hub.config import ServeOptions  # noqa: E402
from slm import pretrained  # noqa: E402
from slm.config import ADAPTER_TRAIN, DEFAULT_BASE, AdapterConfig  # noqa: E402
from slm.errors import SLMError  # noqa: E402
from slm.import_base import import_base  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.train import read_corpus, train  # noqa: E402

HOME = ROOT / "demo-home"
CORPORA = ROOT / "data" / "corpora"
DOMAINS = ("medicine", "law", "religion")
PROMPTS = {  # questions a user asks; each domain's words route it
    "medicine": "What is acute allergic otitis media of the left ear, and how is it treated?",
    "law": "What does a worldwide, royalty-free, non-exclusive license let me do with the "
    "software?",
    "religion": "Who was Moses, to whom the LORD spake, saying, Speak unto the children of Israel?",
}
# A short adapter run per node: a first `make demo` must stay under 10 minutes with the install;
# `slm-node train --base` without overrides trains about 3 epochs (docs/benchmarks.md).
DEMO_TRAIN = replace(ADAPTER_TRAIN, max_epochs=None, max_steps=16, seq_len=128, eval_interval=8)
DEMO_ADAPTER = AdapterConfig(rank=8)
console = Console()


def ensure_model(domain: str) -> Path:
    folder = HOME / domain
    try:
        load_model_folder(folder)
        return folder
    except SLMError:
        pass
    base = pretrained.load(DEFAULT_BASE)
    size = f"{base.config.num_parameters() / 1e6:.0f}M parameters"
    console.print(f"[bold]training[/] the {domain} node: a rank-{DEMO_ADAPTER.rank} adapter on "
                  f"{base.name} ({size})")  # fmt: skip
    train(
        read_corpus(CORPORA / f"{domain}.txt"), domain, folder,
        base.config, DEMO_TRAIN, base=base, adapter=DEMO_ADAPTER,
        on_eval=lambda r: console.print(
            f"  step {r['step']}/{r['total_steps']}  validation loss {r['val_loss']:.3f}"
        ),
    )  # fmt: skip
    return folder


def ensure_generalist() -> Path:
    """The embedded base imported whole (no adapter): the node that drafts every answer."""
    folder = HOME / "generalist"
    try:
        load_model_folder(folder)
        return folder
    except SLMError:
        pass
    console.print("[bold]importing[/] the embedded base as the generalist")
    sample = "\n".join(read_corpus(CORPORA / f"{d}.txt")[:20_000] for d in DOMAINS)
    import_base(pretrained.load(DEFAULT_BASE), sample, "general", folder)
    return folder


def law_halves() -> tuple[Path, Path]:
    """Each law node's own data: half of the shipped law corpus."""
    text = read_corpus(CORPORA / "law.txt")
    cut = text.rfind("\n", 0, len(text) // 2)
    halves = HOME / "data" / "law-a.txt", HOME / "data" / "law-b.txt"
    halves[0].parent.mkdir(parents=True, exist_ok=True)
    for path, part in zip(halves, (text[:cut], text[cut + 1 :]), strict=True):
        if not path.exists():
            path.write_text(part, encoding="utf-8")
    return halves


def show(*args: str) -> None:
    """Run an `slm-hub` or `slm-node` command with its output on this terminal."""
    cli(*args, check=True, capture=False, timeout=None)


def demo_key(hub: Hub) -> Path:
    """The demo's own API key: made (with 100 credits) the first time, kept in demo-home."""
    path = HOME / "demo.key"
    if not path.exists():
        show("slm-hub", "key", "create", "--name", f"demo-{int(time.time())}", "--credits", "100",
             "--home", str(hub.home), "--out", str(path))  # fmt: skip
    return path


def openai_call(hub: Hub, key: Path) -> None:
    """One chat completion through the OpenAI-compatible endpoint, as `curl` sends it."""
    body = {"model": "swarm/auto", "max_tokens": 40, "temperature": 0.3,
            "messages": [{"role": "user", "content": PROMPTS["law"]}]}  # fmt: skip
    command = [
        "curl", "-sS", "--cacert", str(hub.ca), f"{hub.base_url}/chat/completions",
        "-H", f"Authorization: Bearer {key.read_text().strip()}",
        "-H", "Content-Type: application/json", "-d", json.dumps(body),
    ]  # fmt: skip
    shown = " ".join(
        [
            *command[:5],
            "-H",
            f'"Authorization: Bearer $(cat {key})"',
            "-H",
            "'Content-Type: application/json'",
            "-d",
            f"'{command[-1]}'",
        ]
    )
    console.print(shown, highlight=False, soft_wrap=True)
    if shutil.which("curl") is None:
        console.print("(curl is not installed here; any OpenAI client works the same way)")
        return
    reply = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    if "error" in reply:
        raise HarnessError(f"the HTTP API refused the demo's call: {reply['error']['message']}")
    answer = reply["choices"][0]["message"]["content"]
    console.print(f"[bold]{reply['model']}[/] answered: {answer!r}")
    console.print(f"usage {reply['usage']}, routed to node {reply['swarm']['node_id'][:12]} with "
                  f"posterior {reply['swarm']['posterior']:.3f}, charged "
                  f"{reply['swarm']['charged_credits']:.6f} credits", highlight=False)  # fmt: skip


def main() -> None:
    folders = {d: ensure_model(d) for d in DOMAINS}
    generalist = ensure_generalist()
    if not (HOME / "law-2").exists():  # the second law node starts from the same model
        shutil.copytree(folders["law"], HOME / "law-2")
    halves = law_halves()
    nodes = [  # (node home, model folder, its flags: what it trains on, what it may quote)
        ("general-node", generalist, ("--role", "generalist")),
        ("medicine-node", folders["medicine"], ("--reference", str(CORPORA / "medicine.txt"))),
        ("law-node", folders["law"], ("--data", str(halves[0]), "--reference", str(halves[0]))),
        ("law-2-node", HOME / "law-2", ("--data", str(halves[1]), "--reference", str(halves[1]))),
        ("religion-node", folders["religion"], ("--reference", str(CORPORA / "religion.txt"))),
    ]
    hub_home, logs = HOME / "hub", HOME / "logs"
    processes: list = []
    try:
        hub = Hub(hub_home, log=logs / "hub.log", funds=None)  # the demo funds its own key
        processes.append(hub)
        home = ("--home", str(hub_home))
        console.print(f"[bold]hub[/] serving on {hub.address} (TLS), log {hub.log}")
        for name, folder, flags in nodes:
            token = hub.token(name.split("-")[0])
            node = Node(HOME / name, folder, hub, token, *flags, log=logs / f"{name}.log")
            processes.append(node)
        console.print("nodes load the base and, the first time, score the calibration pool "
                      "(a minute or two on 2 cores)")  # fmt: skip
        for node in processes[1:]:
            node.wait_for("joined", timeout=600)
        hub.wait_connected([node.node_id for node in processes[1:]])
        show("slm-hub", "nodes", "--hub", hub.address, *home)
        console.rule("[bold]slm-hub key create[/]: clients ask with a key, and it pays")
        key = demo_key(hub)
        asking = ("--hub", hub.address, *home, "--key-file", str(key))
        for prompt in PROMPTS.values():
            console.rule(f"[bold]slm-hub ask[/] {prompt!r} (drafted, then refined)")
            sampling = ("--max-tokens", "60", "--temperature", "0.3", "--top-k", "40")
            show("slm-hub", "ask", prompt, *asking, *sampling)
        console.rule("[bold]the OpenAI-compatible API[/], with curl")
        openai_call(hub, key)
        console.rule("[bold]slm-hub train[/]: the two law nodes train together")
        wait_trainable(hub, "law", 2)
        show("slm-hub", "train", *home, "--domain", "law", "--rounds", "1", "--local-steps", "4",
             "--timeout", "300")  # fmt: skip
        time.sleep(2)  # the nodes swap the new model in and heartbeat its version
        show("slm-hub", "nodes", "--hub", hub.address, *home)
        console.rule("[bold]the reward ledger[/]")
        show("slm-hub", "ledger", "balance", *home)
        show("slm-hub", "ledger", "verify", *home)
        console.print(
            f"Logs of the hub and each node are in {logs}. Run the network yourself:\n"
            f"  .venv/bin/slm-hub serve --home {hub_home}\n"
            f"  .venv/bin/slm-node join --home {HOME / 'law-node'} --model {folders['law']} "
            f"--hub {ServeOptions().address} --ca {hub_home / 'ca.pem'}\n"
            f"  OpenAI clients: base_url https://127.0.0.1:{ServeOptions().http_port}/v1, "
            f"api_key from {key}, CA {hub_home / 'ca.pem'}\n"
            f"  In a browser: https://127.0.0.1:{ServeOptions().http_port}/ui/ (chat, nodes, "
            f"rewards, training; paste the key from {key}, or the admin's from "
            f"{hub_home / 'api_key'} for the rewards page; trust {hub_home / 'ca.pem'} or accept "
            "the hub's certificate)"
        )
    except HarnessError as exc:
        raise SystemExit(f"demo: {exc}") from None
    finally:
        stop_all(list(reversed(processes)), timeout=20)


if __name__ == "__main__":
    main()
