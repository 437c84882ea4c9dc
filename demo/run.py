"""`make demo`: train three domain nodes on the shipped corpora, route prompts between them,
and pay the answering nodes in a real reward ledger.

Until the hub's routing plane lands, routing runs in this process with the contract the hub
will use: the prompt's profile vector against each node's profile (candidates), each node's
loglik of the prompt, the posterior p(node | prompt) ∝ exp(loglik / T), and the winner's answer.
Each answer is recorded in a SQLite ledger (hash-chained, signed), shown and verified at the
end. Models and node keys are made once in demo-home/ (a minute per model on 2 cores).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import uuid
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.db import make_engine, sqlite_url, upgrade  # noqa: E402
from hub.keys import create_signing_key, load_signing_key  # noqa: E402
from hub.ledger import InferenceRecord, Ledger, format_credits  # noqa: E402
from node.identity import generate_key, load_key, public_openssh, write_key  # noqa: E402
from protos.signing import node_id  # noqa: E402
from slm.config import get_preset  # noqa: E402
from slm.errors import SLMError  # noqa: E402
from slm.generate import SamplingParams, stream_text  # noqa: E402
from slm.model_folder import LoadedModel, load_model_folder  # noqa: E402
from slm.profile import embed  # noqa: E402
from slm.scoring import score  # noqa: E402
from slm.train import read_corpus, train  # noqa: E402

HOME = ROOT / "demo-home"
DOMAINS = ("medicine", "law", "religion")
PROMPTS = {
    "medicine": "Acute and subacute allergic otitis media, recurrent, left ear",
    "law": "The licensor grants you a worldwide, royalty-free, non-exclusive license",
    "religion": "And the LORD spake unto Moses, saying, Speak unto the children of Israel",
}
console = Console()


def ensure_model(domain: str) -> LoadedModel:
    folder = HOME / domain
    try:
        return load_model_folder(folder, serving="fp32")
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
    return load_model_folder(folder, serving="fp32")


def node_identity(domain: str) -> str:
    """The demo node's id, from a real node key made once in demo-home/<domain>-node/."""
    path = HOME / f"{domain}-node" / "node_key"
    if not path.exists():
        write_key(path, generate_key())
    return node_id(public_openssh(load_key(path)))


def open_ledger(node_ids: list[str]) -> Ledger:
    key_path = HOME / "hub" / "ledger_key"
    if not key_path.exists():
        create_signing_key(key_path)
    key = load_signing_key(key_path)
    engine = make_engine(sqlite_url(HOME / "hub" / "hub.db"))
    upgrade(engine)
    ledger = Ledger(engine, key, key.public_key())
    ledger.ensure_accounts(node_ids)
    return ledger


def route(nodes: dict[str, LoadedModel], prompt: str) -> list[tuple[str, float, float, float]]:
    """(domain, profile cosine, bits/byte, posterior) per node, best first."""
    vec = embed(prompt)
    rows = []
    for domain, node in nodes.items():
        s = score(node.model, node.tokenizer, node.quantiles, prompt)
        rows.append((domain, float(node.profile @ vec), s.bits_per_byte, s.loglik))
    top = max(r[3] for r in rows)
    total = sum(math.exp(r[3] - top) for r in rows)
    out = [(d, cos, bpb, math.exp(ll - top) / total) for d, cos, bpb, ll in rows]
    return sorted(out, key=lambda r: -r[3])


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    nodes = {d: ensure_model(d) for d in DOMAINS}
    ids = {d: node_identity(d) for d in DOMAINS}
    ledger = open_ledger(list(ids.values()))
    for expected, prompt in PROMPTS.items():
        started = time.perf_counter()
        ranking = route(nodes, prompt)
        table = Table(title=f"[bold]{prompt}[/]", title_justify="left")
        for column in ("node", "profile cosine", "bits/byte", "posterior"):
            table.add_column(column, justify="left" if column == "node" else "right")
        for domain, cos, bpb, post in ranking:
            table.add_row(domain, f"{cos:.3f}", f"{bpb:.3f}", f"{post:.3f}")
        console.print(table)
        winner = nodes[ranking[0][0]]
        params = SamplingParams(max_tokens=40, temperature=0.7, top_k=40, seed=1, stop=("\n\n",))
        answer = "".join(stream_text(winner.model, winner.tokenizer, prompt, params))
        ledger.record_inferences(
            [
                InferenceRecord(
                    request_id=uuid.uuid4().hex,
                    prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
                    outcome="success",
                    segments=[(ids[ranking[0][0]], len(winner.tokenizer.encode(answer)))],
                    candidates=[{"node": ids[d], "posterior": p} for d, _, _, p in ranking],
                    domain=ranking[0][0],
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            ]
        )
        verdict = "[green]as expected[/]" if ranking[0][0] == expected else "[red]unexpected[/]"
        console.print(f"routed to [bold]{ranking[0][0]}[/] ({verdict}); it continues:")
        console.print(f"  {prompt}[cyan]{answer}[/]\n", highlight=False)
    balances = ledger.balances()
    table = Table(title="[bold]the reward ledger[/] (demo-home/hub/hub.db)", title_justify="left")
    table.add_column("account")
    table.add_column("node")
    table.add_column("balance (credits)", justify="right")
    names = {f"node:{i}": d for d, i in ids.items()}
    for account, value in sorted(balances.items(), key=lambda kv: -kv[1]):
        table.add_row(account[:21], names.get(account, ""), format_credits(value))
    console.print(table)
    check = ledger.verify()
    console.print(
        f"balances sum to {format_credits(sum(balances.values()))}; ledger verify: "
        + (
            f"[green]ok[/], {check.entries} signed entries"
            if check.ok
            else f"[red]{check.problem}[/]"
        )
    )
    console.print(
        "Query it: .venv/bin/slm-hub ledger history --home demo-home/hub\n"
        "The routing plane (`slm-hub serve`, `slm-node join`) lands next; the demo will then run "
        "the hub and nodes as separate processes."
    )


if __name__ == "__main__":
    main()
