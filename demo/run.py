"""`make demo`: train three domain nodes on the shipped corpora, then route prompts between them.

Until the hub lands, routing runs in this process with the same contract the hub will use:
the prompt's profile vector against each node's profile (candidates), each node's loglik of
the prompt, the posterior p(node | prompt) ∝ exp(loglik / T), and the winner's answer. Models
are trained once into demo-home/ (about a minute each on 2 cores) and reused afterwards.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    for expected, prompt in PROMPTS.items():
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
        verdict = "[green]as expected[/]" if ranking[0][0] == expected else "[red]unexpected[/]"
        console.print(f"routed to [bold]{ranking[0][0]}[/] ({verdict}); it continues:")
        console.print(f"  {prompt}[cyan]{answer}[/]\n", highlight=False)
    console.print(
        "The hub (`slm-hub serve`), `slm-node join` and the reward ledger land with their "
        "issues; this demo will then run them as separate processes."
    )


if __name__ == "__main__":
    main()
