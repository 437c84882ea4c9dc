"""Benchmark federated rounds: where a round's time goes, bytes per node, and what it learns.

A real `slm-hub serve` (TLS, its SuperLink) and two real `slm-node join` law nodes (their
SuperNodes) run on this machine; each node starts from a copy of one base model and holds
half of the law corpus. `slm-hub train` runs the rounds; the split of each round comes from
the run's events, with the ServerApp and the ClientApps stamping one machine's clock:

  delivery  the global model from the ServerApp to the ClientApp (Flower's push, the node's
            pull, the ClientApp process start) plus the update back; the tiny model's is almost
            all fixed cost, so the larger model's excess over it is the transfer of its bytes
  setup     the ClientApp loading the model folder and the node's data
  training  the local steps and the validation pass
  adoption  the global model back to the nodes, written into their model folders

Peer, in the same run: the same local steps in this process, without Flower (the compute a
round cannot avoid). Learning: validation loss on the held-out tenth of the law corpus (neither
node has it) after the tiny model's three rounds, against each node alone for the same number
of local steps.

    .venv/bin/python bench/federation_bench.py [--no-63m] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from harness import (  # noqa: E402
    Hub,
    Node,
    cli,
    machine,
    wait_trainable,
)
from harness.processes import stop_all  # noqa: E402
from slm.config import get_preset  # noqa: E402
from slm.federated import apply_weights, local_train, train_config_of, weights_of  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.train import evaluate, read_corpus, train  # noqa: E402


def law_split(work: Path) -> tuple[dict[str, Path], str]:
    """Two halves of the law corpus's first 90% for the nodes, and the last 10% held out."""
    text = read_corpus(ROOT / "data" / "corpora" / "law.txt")
    seen_end = text.rfind("\n", 0, int(len(text) * 0.9))
    seen, held_out = text[:seen_end], text[seen_end + 1 :]
    cut = seen.rfind("\n", 0, len(seen) // 2)
    halves = {"a": work / "a.txt", "b": work / "b.txt"}
    halves["a"].write_text(seen[:cut], encoding="utf-8")
    halves["b"].write_text(seen[cut + 1 :], encoding="utf-8")
    return halves, held_out


def base_model(work: Path, preset_name: str, halves: dict[str, Path]) -> Path:
    preset = get_preset(preset_name)
    folder = work / f"base-{preset_name}"
    if preset_name == "slm-tiny":
        cfg = replace(preset.train, max_steps=200)
    else:  # a start for one timed round, not a trained model: 4 x 512-token windows per step
        cfg = replace(preset.train, max_steps=1, batch_size=4, eval_interval=1, eval_batches=1)
    print(f"training the {preset_name} base model ...", flush=True)
    train(read_corpus(halves["a"]), "law", folder, preset.model, cfg)
    return folder


def run_rounds(work: Path, base: Path, halves: dict[str, Path], rounds: int, steps: int) -> list:
    """Hub + two law nodes, `slm-hub train`; the run's events."""
    net = work / f"net-{base.name}"
    net.mkdir(parents=True)
    hub = Hub(net / "hub")
    nodes: list[Node] = []
    try:
        for name, data in halves.items():
            home, model = net / f"node-{name}", net / f"model-{name}"
            shutil.copytree(base, model)
            nodes.append(Node(home, model, hub, hub.token("law"), "--data", str(data)))
        wait_trainable(hub, "law", len(nodes))
        print(f"{rounds} round(s) of {steps} local steps on {base.name} ...", flush=True)
        # FedAvg, as the published figures say (two nodes: it must be asked for explicitly)
        done = cli("slm-hub", "train", "--home", str(hub.home), "--domain", "law", "--rounds",
                   str(rounds), "--local-steps", str(steps), "--timeout", "1800", "--json",
                   "--strategy", "fedavg", "--allow-small-fedavg", timeout=None)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    finally:
        stop_all([*nodes, hub], timeout=60)


def split(events: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per round: wall, delivery, setup, training, aggregation, adoption (s), bytes per node."""
    started = {e["round"]: e["time"] for e in events if e["event"] == "round-started"}
    out = []
    for e in events:
        if e["event"] != "round-done":
            continue
        timing, nodes = e["timing"], e["nodes"].values()
        # the slowest node sets the pace: take its split, not a mix of nodes
        slowest = max(nodes, key=lambda n: n["replied_at"])
        delivery = (slowest["received_at"] - timing["sent_at"]) + (
            timing["replies_at"] - slowest["replied_at"]
        )
        out.append({
            "round": e["round"], "wall": e["time"] - started[e["round"]],
            "delivery": delivery, "setup": slowest["setup_s"], "training": slowest["train_s"],
            "aggregate": timing["aggregate_s"], "adopt": timing["adopt_phase_s"],
            "bytes": timing["bytes_down_per_node"], "val_loss": e["val_loss"],
            "weights": e["weights_sha256"],
        })  # fmt: skip
    return out


def peer_seconds(base: Path, halves: dict[str, Path], steps: int) -> float:
    """Both nodes' local steps, one after the other, in this process (no Flower)."""
    start_w = weights_of(load_model_folder(base).model)
    began = time.perf_counter()
    for data in halves.values():
        local_train(base, data, start_w, steps, 1)
    return time.perf_counter() - began


def held_out_losses(
    base: Path, halves: dict[str, Path], held_out: str, global_path: Path, steps: int
) -> tuple[float, float, dict[str, float]]:
    from safetensors.numpy import load_file

    loaded = load_model_folder(base)
    cfg = train_config_of(loaded)
    ids = torch.tensor(loaded.tokenizer.encode(held_out))

    def loss(weights: dict[str, np.ndarray]) -> float:
        model = load_model_folder(base).model
        apply_weights(model, weights)
        return evaluate(model, ids, cfg, loaded.tokenizer.bos_id, torch.device("cpu"))

    start_w = weights_of(loaded.model)
    alone = {n: loss(local_train(base, d, start_w, steps, 1).weights) for n, d in halves.items()}
    return loss(start_w), loss(load_file(global_path)), alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="local steps per round (tiny)")
    parser.add_argument("--no-63m", action="store_true", help="skip the slm-63m round")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="federation-bench-"))
    halves, held_out = law_split(work)
    cases = [("slm-tiny", 3, args.steps)] + ([] if args.no_63m else [("slm-63m", 1, 2)])
    results = {}
    for preset, rounds, steps in cases:
        base = base_model(work, preset, halves)
        events = run_rounds(work, base, halves, rounds, steps)
        results[preset] = (base, split(events), peer_seconds(base, halves, steps), steps)

    base, rows, _, steps = results["slm-tiny"]
    global_path = work / f"net-{base.name}" / "hub" / "models" / "law"
    start_loss, federated, alone = held_out_losses(
        base, halves, held_out, global_path / f"{rows[-1]['weights']}.safetensors", 3 * steps
    )

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Command: "
        "`bench/federation_bench.py`. A real `slm-hub serve` (TLS, Flower SuperLink) and two "
        "`slm-node join --threads 1` law nodes (SuperNodes; serving and the ClientApps use one "
        "torch thread each) on this machine; each node has half of the law corpus. The split "
        "is the slowest node's, from the run's events (one clock for ServerApp and ClientApps): "
        "delivery = global model to the ClientApp (Flower push and pull, ClientApp process "
        "start) + update back; setup = loading the model folder and the data; training = the "
        "local steps and a validation pass; adoption = the global model back into both model "
        "folders. Peer: both nodes' local steps run one after the other in the benchmark "
        "process (2 torch threads), without Flower.",
        "",
        "| model | round | local steps | round wall (s) | delivery (s) | setup (s) | training (s) "
        "| aggregation (s) | adoption (s) | MB per node each way | peer: local steps, both "
        "nodes (s) | round / peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, (_, rows_, peer, steps_) in results.items():
        for r in rows_:
            lines.append(
                f"| {preset} | {r['round']} | {steps_} | {r['wall']:.1f} | {r['delivery']:.1f} | "
                f"{r['setup']:.1f} | {r['training']:.1f} | {r['aggregate']:.2f} | "
                f"{r['adopt']:.1f} | {r['bytes'] / 1e6:.1f} | {peer:.1f} | "
                f"{r['wall'] / peer:.1f}x |"
            )
    if "slm-63m" in results:
        tiny = float(np.mean([r["delivery"] for r in results["slm-tiny"][1]]))
        big = results["slm-63m"][1][0]
        excess = big["delivery"] - tiny
        lines += [
            "",
            f"Transfer: the slm-63m delivery exceeds the tiny model's ({tiny:.1f} s, almost all "
            f"fixed cost: a ClientApp process start per message) by {excess:.1f} s for "
            f"{2 * big['bytes'] / 1e6:.0f} MB (the model each way): Flower moved about "
            f"**{2 * big['bytes'] / 1e6 / excess:.0f} MB/s** on loopback here. Adoption is the "
            "same fixed cost plus the model down again, a recalibration and the folder write.",
        ]
    lines += [
        "",
        f"Learning (slm-tiny, {len(rows)} FedAvg rounds of {steps} local steps on two nodes, "
        f"against each node alone for {3 * steps} steps from the same start; loss in nats per "
        "token on the held-out tenth of the law corpus):",
        "",
        "| model | held-out loss | vs. the better node alone |",
        "|---|---:|---:|",
        f"| start (base model) | {start_loss:.4f} | |",
    ]
    best_alone = min(alone.values())
    for name, value in alone.items():
        lines.append(f"| node {name} alone | {value:.4f} | |")
    lines.append(
        f"| **federated** | **{federated:.4f}** | {federated - best_alone:+.4f} "
        f"({'lower: target met' if federated < best_alone else 'not lower: target missed'}) |"
    )
    publish("federation", "Federated rounds (issue 5)", "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
