"""Benchmark the audit: what re-scoring a node's claim costs, and what auditing costs the hub.

An slm-tiny model serves on 3 real `slm-node join` processes behind a real `slm-hub serve`
(TLS); one client asks one-token answers, each scored by all 3 nodes. The same run measures
three hubs in turn: --audit-rate 0 (the peer: no audit), the default 0.05, and 1 (every
claim). Hub CPU per Ask is the hub process's alone; the auditor (`node.auditor`, a process of
its own) is measured apart, per audited claim, against the peer that matters for it: the CPU a
node spends producing the claim (an in-process fp32 score of the same prompt).

    .venv/bin/python bench/audit_bench.py [--asks N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from bench.routing_bench import PROMPT, cpu_s, measure, tiny_model  # noqa: E402
from harness import Hub, Node, machine  # noqa: E402
from harness.processes import stop_all  # noqa: E402
from hub.routing.config import RouterConfig  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.scoring import score  # noqa: E402

NODES = 3
RATES = (0.0, RouterConfig().audit_rate, 1.0)


def auditor_cpu_s(hub: Hub) -> float:
    for child in psutil.Process(hub.pid).children():
        if "node.auditor" in " ".join(child.cmdline()):
            times = child.cpu_times()
            return times.user + times.system
    return 0.0


def phase(work: Path, model: Path, rate: float, asks: int) -> dict[str, float]:
    """One hub at `rate` with the nodes; CPU per Ask (hub) and per audited claim (auditor)."""
    hub = Hub(work / f"hub-{rate}", 0, "--audit-rate", str(rate))
    nodes = [Node(work / f"node-{rate}-{i}", model, hub, hub.token("medicine"))
             for i in range(NODES)]  # fmt: skip
    try:
        hub.wait_connected([n.node_id for n in nodes])
        ca = hub.ca.read_bytes()
        measure(hub.address, ca, 1, 5, hub.metadata)  # warm every node, and the auditor's model
        time.sleep(3.0)
        hub_before, audit_before = cpu_s(hub.pid), auditor_cpu_s(hub)
        got = measure(hub.address, ca, 1, asks, hub.metadata)
        hub_ms = (cpu_s(hub.pid) - hub_before) * 1000 / len(got["e2e"])
        while True:  # until the auditor has caught up with the queue
            seen = auditor_cpu_s(hub)
            time.sleep(1.0)
            if auditor_cpu_s(hub) == seen:
                break
        audit_s = auditor_cpu_s(hub) - audit_before
    finally:
        stop_all([*nodes, hub])
    summary = (re.findall(r"audit: (\d+ .*)", hub.output) or [""])[-1]  # logged at shutdown
    verdicts = re.findall(r"(\d+) ([\w-]+)", summary)
    audited = sum(int(n) for n, kind in verdicts if kind != "skipped")
    warm = 5 * NODES * rate  # the warm-up's claims, audited before the measured window
    claims = max(0.0, audited - warm)
    return {"rate": rate, "asks": len(got["e2e"]), "hub_ms": hub_ms, "audited": audited,
            "audit_ms": audit_s * 1000 / claims if claims else 0.0}  # fmt: skip


def _median(rate: float, got: list[dict[str, float]]) -> dict[str, float]:
    """One rate's rounds: asks and claims summed, CPU figures their medians."""
    audited = [r["audit_ms"] for r in got if r["audit_ms"]]
    return {"rate": rate, "asks": sum(r["asks"] for r in got),
            "audited": sum(r["audited"] for r in got),
            "hub_ms": statistics.median(r["hub_ms"] for r in got),
            "audit_ms": statistics.median(audited) if audited else 0.0}  # fmt: skip


def node_score_ms(model: Path, rounds: int = 50) -> float:
    """The peer: CPU a node spends on the claim itself (one fp32 score of the prompt)."""
    loaded = load_model_folder(model, serving="fp32")
    score(loaded.model, loaded.tokenizer, loaded.quantiles, PROMPT)
    before = os.times()
    for _ in range(rounds):
        score(loaded.model, loaded.tokenizer, loaded.quantiles, PROMPT)
    after = os.times()
    return ((after.user - before.user) + (after.system - before.system)) * 1000 / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=100, help="asks per hub")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three hubs, in turn")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    model = tiny_model(work)
    import torch

    torch.set_num_threads(1)  # as the auditor runs
    peer_ms = node_score_ms(model)
    runs: dict[float, list[dict[str, float]]] = {rate: [] for rate in RATES}
    for n in range(args.rounds):  # the rates in turn, so a slow minute hits all of them
        for rate in RATES:
            print(f"round {n + 1}: audit rate {rate} ...", flush=True)
            runs[rate].append(phase(work / f"round-{n}", model, rate, args.asks))
    rows = [_median(rate, got) for rate, got in runs.items()]
    off = rows[0]["hub_ms"]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Command: "
        f"`bench/audit_bench.py --asks {args.asks} --rounds {args.rounds}` (medians over the "
        f"rounds, the three hubs in turn). A real `slm-hub serve` (TLS) and {NODES} "
        "`slm-node join` processes (slm-tiny, medicine), one client asking one-token answers "
        "that every node scores; one hub per audit rate, in turn. The auditor is the hub's "
        "`node.auditor` process (fp32, 1 torch thread). Peer for the audit: the CPU a node "
        f"spends on the claim, one fp32 score of the same prompt in-process: {peer_ms:.2f} ms.",
        "",
        "| audit rate | asks | hub CPU per Ask (ms) | vs no audit | claims audited | auditor "
        "CPU per audited claim (ms) | / node's own score | auditor CPU per Ask (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_ask = r["audit_ms"] * NODES * r["rate"]
        ratio = f"{r['audit_ms'] / peer_ms:.1f}x" if r["audit_ms"] else "—"
        lines.append(
            f"| {r['rate']:g} | {r['asks']:.0f} | {r['hub_ms']:.2f} | {r['hub_ms'] / off:.2f}x | "
            f"{r['audited']:.0f} | {r['audit_ms']:.2f} | {ratio} | {per_ask:.2f} |"
        )
    lines += [
        "",
        "Why the default rate is 0.05: an Ask pays a node at most 1 + 0.01 x 4,096 = 42 credits; "
        "a claim the audit proves false costs 1,000 credits (`rewards.audit_penalty`) and the "
        "node's reputation (it is routed to no more), so one lie's expected fine, 0.05 x 1,000 = "
        "50 credits, exceeds the most the lie can win, and a node that lies on every prompt is "
        "caught after 20 of its claims on average (1 - 0.95^n: 64% within 20, 99.4% within 100).",
    ]
    publish("audit", "The audit", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
