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

Three kinds of model: slm-tiny and slm-63m, whole models trained from scratch (a round moves
every weight), and domain adapters (rank-16 LoRA) of the embedded SmolLM2-135M-Instruct base,
as `slm-node train --base` makes them (a round moves the adapter alone; the base never moves).

Peer, in the same run: the same local steps in this process, without Flower (the compute a
round cannot avoid). Learning: validation loss on the held-out tenth of the law corpus (neither
node has it) after the tiny model's and the adapters' rounds, against each node alone for the
same number of local steps.

    .venv/bin/python bench/federation_bench.py [--no-63m] [--no-adapter] [--no-write]
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
from slm import pretrained  # noqa: E402
from slm.config import ADAPTER_TRAIN, DEFAULT_BASE, AdapterConfig, get_preset  # noqa: E402
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


ADAPTER = "adapter"  # the case of adapters on the embedded base
ADAPTER_START_STEPS = 4  # the adapters' common start: this many steps on node a's half
ADAPTER_RANK = AdapterConfig().rank  # what `slm-node train --base` trains


def base_model(work: Path, preset_name: str, halves: dict[str, Path]) -> Path:
    """The model both nodes start from (each gets a copy)."""
    folder = work / f"base-{preset_name}"
    if preset_name == ADAPTER:  # `slm-node train --base`'s settings, briefly: a common start
        base = pretrained.load(DEFAULT_BASE)
        cfg = replace(ADAPTER_TRAIN, max_steps=ADAPTER_START_STEPS, max_epochs=None,
                      eval_interval=ADAPTER_START_STEPS)  # fmt: skip
        print(f"training the start adapter on {DEFAULT_BASE} ...", flush=True)
        train(read_corpus(halves["a"]), "law", folder, base.config, cfg, base=base,
              adapter=AdapterConfig(rank=ADAPTER_RANK))  # fmt: skip
        return folder
    preset = get_preset(preset_name)
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


def label(case: str) -> str:
    """A case's name in the tables."""
    return f"{DEFAULT_BASE} + rank-{ADAPTER_RANK} adapter" if case == ADAPTER else case


def round_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "| model | round | local steps | round wall (s) | delivery (s) | setup (s) | training (s) "
        "| aggregation (s) | adoption (s) | MB per node each way | peer: local steps, both "
        "nodes (s) | round / peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, (_, rows_, peer, steps_) in results.items():
        for r in rows_:
            lines.append(
                f"| {label(case)} | {r['round']} | {steps_} | {r['wall']:.1f} | "
                f"{r['delivery']:.1f} | {r['setup']:.1f} | {r['training']:.1f} | "
                f"{r['aggregate']:.2f} | {r['adopt']:.1f} | {r['bytes'] / 1e6:.1f} | {peer:.1f} | "
                f"{r['wall'] / peer:.1f}x |"
            )
    return lines


def transfer_lines(results: dict[str, Any]) -> list[str]:
    tiny = float(np.mean([r["delivery"] for r in results["slm-tiny"][1]]))
    big = results["slm-63m"][1][0]
    excess = big["delivery"] - tiny
    return [
        "",
        f"Transfer: the slm-63m delivery exceeds the tiny model's ({tiny:.1f} s, almost all "
        f"fixed cost: a ClientApp process start per message) by {excess:.1f} s for "
        f"{2 * big['bytes'] / 1e6:.0f} MB (the model each way): Flower moved about "
        f"**{2 * big['bytes'] / 1e6 / excess:.0f} MB/s** on loopback here. Adoption is the "
        "same fixed cost plus the model down again, a recalibration and the folder write. "
        "Weights travel as one safetensors blob per message (`protos/flower_weights.py`): with "
        "an Array per tensor, the SuperLink spent about 50 s of one core per phase on a rank-2 "
        "adapter's 240 tensors, and the adapter rounds of the run before this change (2026-12-06 "
        "15:50) took 110-168 s each. The ServerApp pulls replies every 0.25 s "
        "(`hub/training/flower.py`; Flower's own send_and_receive waits 3 s between pulls); an "
        "idle SuperNode still asks for messages every 3 s (Flower's, not configurable).",
    ]


def adapter_lines(results: dict[str, Any]) -> list[str]:
    """Adapter rounds against the slm-63m round: what moves, and how long a round takes."""
    rows, steps = results[ADAPTER][1], results[ADAPTER][3]
    mb = rows[0]["bytes"] / 1e6
    wall = float(np.mean([r["wall"] for r in rows]))
    base = pretrained.load(DEFAULT_BASE).config.num_parameters()
    line = (
        f"Adapters: a round moves {mb:.1f} MB per node each way ({2 * mb:.1f} MB down and up): "
        f"the rank-{ADAPTER_RANK} adapter alone, never the {base / 1e6:.0f}M-parameter base, "
        f"which every node already holds. A round of {steps} local steps took {wall:.1f} s on "
        "average"
    )
    if "slm-63m" in results:
        big, big_steps = results["slm-63m"][1][0], results["slm-63m"][3]
        line += (
            f", against {2 * big['bytes'] / 1e6:.0f} MB down and up per node "
            f"({big['bytes'] / 1e6 / mb:.0f}x more) and {big['wall']:.1f} s for a whole slm-63m "
            f"round of {big_steps} local steps"
        )
    return ["", line + ". The adapters' setup and adoption include loading the base in each "
            "ClientApp (a process per message)."]  # fmt: skip


def learning_lines(
    title: str, start: str, losses: tuple[float, float, dict[str, float]]
) -> list[str]:
    start_loss, federated, alone = losses
    best_alone = min(alone.values())
    lines = [
        "",
        title,
        "",
        "| model | held-out loss | vs. the better node alone |",
        "|---|---:|---:|",
        f"| start ({start}) | {start_loss:.4f} | |",
    ]
    for name, value in alone.items():
        lines.append(f"| node {name} alone | {value:.4f} | |")
    lines.append(
        f"| **federated** | **{federated:.4f}** | {federated - best_alone:+.4f} "
        f"({'lower: target met' if federated < best_alone else 'not lower: target missed'}) |"
    )
    return lines


def learning(results: dict[str, Any], case: str, work: Path, halves, held_out) -> tuple:  # type: ignore[no-untyped-def]
    """(start, federated, each node alone) held-out losses of one case's run."""
    base, rows, _, steps = results[case]
    global_path = work / f"net-{base.name}" / "hub" / "models" / "law"
    weights = global_path / f"{rows[-1]['weights']}.safetensors"
    return held_out_losses(base, halves, held_out, weights, len(rows) * steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="local steps per round (tiny)")
    parser.add_argument("--no-63m", action="store_true", help="skip the slm-63m round")
    parser.add_argument("--adapter-rounds", type=int, default=3)
    parser.add_argument("--adapter-steps", type=int, default=4, help="local steps per round")
    parser.add_argument("--no-adapter", action="store_true", help="skip the adapter rounds")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=2,
        help="torch threads of this process (the peer, the nodes alone); 1 when other work "
        "holds a core: two threads on one free core run several times slower",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="federation-bench-"))
    halves, held_out = law_split(work)
    cases = [("slm-tiny", 3, args.steps)] + ([] if args.no_63m else [("slm-63m", 1, 2)])
    if not args.no_adapter:
        cases.append((ADAPTER, args.adapter_rounds, args.adapter_steps))
    results = {}
    for case, rounds, steps in cases:
        base = base_model(work, case, halves)
        events = run_rounds(work, base, halves, rounds, steps)
        results[case] = (base, split(events), peer_seconds(base, halves, steps), steps)

    command = " ".join(["bench/federation_bench.py", *sys.argv[1:]])
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Command: "
        f"`{command}`. A real `slm-hub serve` (TLS, Flower SuperLink) and two "
        "`slm-node join --threads 1` law nodes (SuperNodes; serving and the ClientApps use one "
        "torch thread each) on this machine; each node has half of the law corpus. The split "
        "is the slowest node's, from the run's events (one clock for ServerApp and ClientApps): "
        "delivery = global model to the ClientApp (Flower push and pull, ClientApp process "
        "start) + update back; setup = loading the model folder and the data; training = the "
        "local steps and a validation pass; adoption = the global model back into both model "
        "folders. Peer: both nodes' local steps run one after the other in the benchmark "
        f"process ({args.threads} torch thread{'s' * (args.threads > 1)}), without Flower.",
    ]
    if ADAPTER in results:
        lines[0] += (
            f" Adapters: rank-{ADAPTER_RANK} LoRA adapters of the embedded {DEFAULT_BASE} "
            f"(`slm-node train --base`'s settings: batch {ADAPTER_TRAIN.batch_size} x "
            f"{ADAPTER_TRAIN.seq_len} tokens), both nodes starting from one adapter trained "
            f"{ADAPTER_START_STEPS} steps on node a's half; "
            f"{results[ADAPTER][1][-1]['round']} FedAvg rounds of {results[ADAPTER][3]} local "
            "steps."
        )
    lines += ["", *round_lines(results)]
    if "slm-63m" in results:
        lines += transfer_lines(results)
    if ADAPTER in results:
        lines += adapter_lines(results)
    tiny_rounds, tiny_steps = len(results["slm-tiny"][1]), results["slm-tiny"][3]
    lines += learning_lines(
        f"Learning (slm-tiny, {tiny_rounds} FedAvg rounds of {tiny_steps} local steps on two "
        f"nodes, against each node alone for {tiny_rounds * tiny_steps} steps from the same "
        "start; loss in nats per token on the held-out tenth of the law corpus):",
        "base model", learning(results, "slm-tiny", work, halves, held_out),
    )  # fmt: skip
    if ADAPTER in results:
        rounds, steps = len(results[ADAPTER][1]), results[ADAPTER][3]
        lines += learning_lines(
            f"Learning (adapters of {DEFAULT_BASE}, {rounds} FedAvg rounds of {steps} local "
            f"steps on two nodes, against each node's adapter alone for {rounds * steps} steps "
            "from the same start; loss in nats per token on the held-out tenth of the law "
            "corpus):",
            "the common adapter", learning(results, ADAPTER, work, halves, held_out),
        )  # fmt: skip
    publish("federation", "Federated rounds (issues 5 and 18)", "\n".join(lines),
            not args.no_write)  # fmt: skip


if __name__ == "__main__":
    main()
