"""Does the domain node add what the generalist lacks? Fact recall and fluency of three-model
answers against the generalist alone and the domain node alone, through a real hub.

Nodes: a generalist (the embedded instruct base, `slm-node import`, joined with `--role
generalist`) and one adapter node per shipped corpus, trained on it and joined with it as
`--reference`. Each domain's facts (evaluation/facts.py) come from its node's training text.
Every question is asked twice, greedily:

  refine, routed  the hub drafts with the generalist, scores prompt and draft on every refining
                  node, and the most confident refines: the three-model answer; its draft is
                  the generalist's answer alone (the same prompt, model and settings)
  direct, pinned  the question's own domain node answers it: the domain node alone

An answer recalls a fact when it contains its span (normalised). Fluency is the answer's bits
per byte under the base model, BOS-conditioned as a node scores a prompt: how much the
generalist's own weights find the text unlike what they would write.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.facts import Fact, facts, recalled
from harness import Hub, Node, refine
from harness.processes import stop_all
from slm import pretrained
from slm.config import DEFAULT_BASE
from slm.model import SLM
from slm.scoring import loglik
from slm.train import split_corpus

SYSTEMS = ("generalist", "domain", "three-model")
MAX_TOKENS = 48  # an answer of a sentence or two


@dataclass(frozen=True)
class Answered:
    fact: Fact
    texts: dict[str, str]  # system -> answer
    routed: str  # the domain whose node refined
    seconds: float  # the refine Ask, draft included


def fact_sets(corpora: dict[str, str], count: int) -> dict[str, list[Fact]]:
    """`count` facts per domain from the training split of its corpus (what its node trains on
    and holds as reference); spans no other corpus holds."""
    out = {}
    for domain, text in corpora.items():
        train_text, _ = split_corpus(text, 0.1)
        others = [t for d, t in corpora.items() if d != domain]
        out[domain] = facts(domain, train_text, others, count)
    return out


def ask_facts(
    work: Path, generalist: Path, adapters: dict[str, Path], references: dict[str, Path],
    sets: dict[str, list[Fact]],
) -> list[Answered]:  # fmt: skip
    """A hub, the generalist and the domain nodes; every fact asked both ways."""
    hub = Hub(work / "hub")
    nodes: list[Node] = []
    try:
        nodes.append(Node(work / "nodes" / "_generalist", generalist, hub, hub.token("general"),
                          "--role", "generalist"))  # fmt: skip
        for domain, folder in adapters.items():
            nodes.append(Node(work / "nodes" / domain, folder, hub, hub.token(domain),
                              "--reference", str(references[domain])))  # fmt: skip
        for node in nodes:
            node.wait_for("joined", timeout=600)
        out: list[Answered] = []
        every = [f for group in sets.values() for f in group]
        for i, fact in enumerate(every, 1):
            began = time.monotonic()
            three, _, drafted, result = refine(hub, fact.question, mode="refine",
                                               max_tokens=MAX_TOKENS, timeout=600)  # fmt: skip
            took = time.monotonic() - began
            alone, _, _, _ = refine(hub, fact.question, mode="direct", domain=fact.domain,
                                    max_tokens=MAX_TOKENS, timeout=600)  # fmt: skip
            texts = {"generalist": drafted.text if drafted else "", "domain": alone,
                     "three-model": three}  # fmt: skip
            out.append(Answered(fact, texts, result.domain, took))
            if i % 20 == 0:
                print(f"    asked {i}/{len(every)} facts", flush=True)
        return out
    finally:
        stop_all([*nodes, hub], timeout=60)


def fluency(answers: list[Answered]) -> dict[str, list[float]]:
    """Each system's answers in bits per byte under the base model (BOS-conditioned)."""
    base = pretrained.load(DEFAULT_BASE)
    model = SLM(base.config)
    model.load_state_dict(base.state, strict=True, assign=True)
    model.eval()
    out: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    for a in answers:
        for system in SYSTEMS:
            text = a.texts[system]
            if text.strip():
                nats, _ = loglik(model, base.tokenizer, text)
                out[system].append(-nats / (len(text.encode("utf-8")) * math.log(2)))
    return out


def summary(answers: list[Answered], bpb: dict[str, list[float]]) -> dict:
    domains = sorted({a.fact.domain for a in answers})
    recall = {d: {s: sum(recalled(a.texts[s], a.fact) for a in answers if a.fact.domain == d)
                  for s in SYSTEMS} for d in domains}  # fmt: skip
    return {
        "domains": domains,
        "facts": {d: sum(a.fact.domain == d for a in answers) for d in domains},
        "recall": recall,
        "total": {s: sum(recall[d][s] for d in domains) for s in SYSTEMS},
        "routed_right": sum(a.routed == a.fact.domain for a in answers),
        "bpb": {s: float(np.mean(v)) if v else float("nan") for s, v in bpb.items()},
        "refine_s": float(np.mean([a.seconds for a in answers])),
        "examples": [
            {"domain": a.fact.domain, "question": a.fact.question, "span": a.fact.answer,
             **a.texts}
            for a in answers[:: max(1, len(answers) // len(domains))][: len(domains)]
        ],
    }  # fmt: skip
