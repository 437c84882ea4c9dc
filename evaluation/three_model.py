"""Does the domain node add what the generalist lacks? Fact recall and fluency of three-model
answers against the generalist alone and the domain node alone, through a real hub.

Nodes: a generalist (the embedded instruct base, `slm-node import`, joined with `--role
generalist`) and one adapter node per shipped corpus, trained on it and joined with it as
`--reference`. Each domain's facts (evaluation/facts.py) come from its node's training text.
Every question is asked twice, greedily:

  refine, routed  the hub drafts with the generalist, scores the prompt on every refining
                  node, and the most confident refines: the three-model answer; its draft is
                  the generalist's answer alone (the same prompt, model and settings)
  direct, pinned  the question's own domain node answers it: the domain node alone

An answer recalls a fact when it contains its span (normalised). Fluency is the answer's bits
per byte under the base model, BOS-conditioned as a node scores a prompt: how much the
generalist's own weights find the text unlike what they would write. A three-model answer opens
with a quote of its domain's corpus, which the base reads far less easily than its own
writing, so fluency is also measured on the answer's own words (its tokens outside any stretch
it copies from the corpus), on what the writer wrote past the quote given the quote (the quote
recomputed from the question and the refining node's reference, as the node chose it), and on
the corpus passages that hold the facts (what an answer quoting them reads like).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from evaluation.facts import Fact, facts, normalise, recalled
from harness import Hub, Node, refine
from harness.processes import stop_all
from slm import pretrained
from slm.atomic import atomic_write_text
from slm.config import ADAPTER_TRAIN, DEFAULT_BASE, AdapterConfig
from slm.import_base import import_base
from slm.model import SLM
from slm.refine import quote
from slm.retrieval import Reference, passages
from slm.scoring import token_logprobs
from slm.tokenizer import SLMTokenizer
from slm.train import read_corpus, split_corpus, train

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "data" / "corpora"

SYSTEMS = ("generalist", "domain", "three-model")
MAX_TOKENS = 48  # an answer of a sentence or two
SOURCE_CHARS = 120  # of corpus on each side of a fact's span: a passage about an answer's length
COPY_CHARS = 32  # a stretch of an answer this long found in its domain's corpus is a quote
AROUND = "three-model, own words"  # its answers' tokens outside what they copy from the corpus
AFTER = "three-model, after its quote"  # what the writer wrote past the node's quote, given it
SOURCE = "corpus passages"  # each fact's span in its corpus, SOURCE_CHARS each side


@dataclass(frozen=True)
class Answered:
    fact: Fact
    texts: dict[str, str]  # system -> answer
    routed: str  # the domain whose node refined
    seconds: float  # the refine Ask, draft included

    def row(self) -> dict:
        """As answers.jsonl and facts.json hold it."""
        return {"fact": asdict(self.fact), "texts": self.texts, "routed": self.routed,
                "seconds": self.seconds}  # fmt: skip

    @classmethod
    def from_row(cls, row: dict) -> Answered:
        return cls(Fact(**row["fact"]), row["texts"], row["routed"], row["seconds"])


def fact_sets(corpora: dict[str, str], count: int) -> dict[str, list[Fact]]:
    """`count` facts per domain from the training split of its corpus (what its node trains on
    and holds as reference); spans no other corpus holds."""
    out = {}
    for domain, text in corpora.items():
        train_text, _ = split_corpus(text, 0.1)
        others = [t for d, t in corpora.items() if d != domain]
        out[domain] = facts(domain, train_text, others, count)
    return out


class AnswerLog:
    """Answers as they come, one JSON line each after a line naming the models and settings
    they came from: a run stopped part way keeps what it asked, and a later run of the same
    models asks only the rest (a line cut short by the stop is asked again)."""

    def __init__(self, path: Path, stamp: str) -> None:
        self.path, self.stamp = path, stamp
        self._lock = threading.Lock()

    def load(self) -> dict[tuple[str, str, str], Answered]:
        """The answers logged for these models and settings; a log of others is started over."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        if not lines or _loads(lines[0]) != {"stamp": self.stamp}:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"stamp": self.stamp}) + "\n")
            return {}
        out, kept = {}, [lines[0]]
        for line in lines[1:]:
            row = _loads(line)
            if row is None:  # cut short by a stop: asked again, and not left for `add` to join
                continue
            answered = Answered.from_row(row)
            out[fact_key(answered.fact)] = answered
            kept.append(line)
        if len(kept) < len(lines):
            atomic_write_text(self.path, "\n".join(kept) + "\n")
        return out

    def add(self, answered: Answered) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(answered.row()) + "\n")


def _loads(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def fact_key(fact: Fact) -> tuple[str, str, str]:
    return fact.domain, fact.question, fact.answer


CODE = ("hub", "node", "slm", "protos", "harness")  # what routes, drafts and refines an answer


def answers_stamp(folders: list[Path]) -> str:
    """What the answers depend on: each model's config (its corpus digest and training settings
    within), how long an answer may be, and the code that routes and writes it (an edit there
    may change any answer, so it starts the log over)."""
    digest = hashlib.sha256(f"max_tokens={MAX_TOKENS}".encode())
    for source in sorted(p for top in CODE for p in (ROOT / top).rglob("*.py")):
        digest.update(str(source.relative_to(ROOT)).encode() + b"\0" + source.read_bytes())
    for folder in folders:
        digest.update(folder.name.encode() + b"\0" + (folder / "config.json").read_bytes())
    return digest.hexdigest()


def ask_one(hub: Hub, fact: Fact) -> Answered:
    """The fact asked both ways: refined through the hub's routing, then its own domain node
    alone."""
    began = time.monotonic()
    three, _, drafted, result = refine(hub, fact.question, mode="refine", max_tokens=MAX_TOKENS,
                                       timeout=600)  # fmt: skip
    took = time.monotonic() - began
    alone, _, _, _ = refine(hub, fact.question, mode="direct", domain=fact.domain,
                            max_tokens=MAX_TOKENS, timeout=600)  # fmt: skip
    texts = {"generalist": drafted.text if drafted else "", "domain": alone, "three-model": three}
    return Answered(fact, texts, result.domain, took)


def ask_facts(
    work: Path, generalist: Path, adapters: dict[str, Path], references: dict[str, Path],
    sets: dict[str, list[Fact]], log: AnswerLog, parallel: int = 1,
) -> list[Answered]:  # fmt: skip
    """A hub, the generalist and the domain nodes; every fact not yet in `log` asked both ways,
    `parallel` facts at a time: one fact's Asks keep one model busy at a time, and a second
    fact in flight fills what its small decoding steps leave of the cores."""
    every = [f for group in sets.values() for f in group]
    done = log.load()
    todo = [f for f in every if fact_key(f) not in done]
    if done:
        print(f"    {len(every) - len(todo)} answers kept from an earlier run", flush=True)
    if todo:
        done |= _ask(work, generalist, adapters, references, todo, log, parallel)
    return [done[fact_key(f)] for f in every]


def _ask(
    work: Path, generalist: Path, adapters: dict[str, Path], references: dict[str, Path],
    todo: list[Fact], log: AnswerLog, parallel: int,
) -> dict[tuple[str, str, str], Answered]:  # fmt: skip
    # ten nodes share this machine's cores: a score may wait its turn far past the default
    hub = Hub(work / "hub", 0, "--score-deadline", "60", "--stall", "60")
    nodes: list[Node] = []
    try:
        nodes.append(Node(work / "nodes" / "_generalist", generalist, hub, hub.token("general"),
                          "--role", "generalist"))  # fmt: skip
        for domain, folder in adapters.items():
            nodes.append(Node(work / "nodes" / domain, folder, hub, hub.token(domain),
                              "--reference", str(references[domain])))  # fmt: skip
        for node in nodes:
            node.wait_for("joined", timeout=600)
        out = {}
        pool = ThreadPoolExecutor(max_workers=parallel)
        try:
            futures = [pool.submit(ask_one, hub, fact) for fact in todo]
            for i, future in enumerate(as_completed(futures), 1):
                answered = future.result()
                log.add(answered)
                out[fact_key(answered.fact)] = answered
                if i % 20 == 0:
                    print(f"    asked {i}/{len(todo)} facts", flush=True)
        finally:  # on a failure, the Asks in flight end when their hub stops, not 600 s later
            pool.shutdown(wait=False, cancel_futures=True)
        return out
    finally:
        stop_all([*nodes, hub], timeout=60)


def span_at(text: str, span: str, start: int = 0) -> tuple[int, int] | None:
    """Where the span's words stand in `text` (from `start`), in any case, spacing or
    punctuation between them, as `recalled` matches them; None if they do not."""
    words = normalise(span).split()
    if not words:
        return None
    pattern = r"(?<![a-z0-9])" + r"[^a-z0-9]+".join(words) + r"(?![a-z0-9])"
    found = re.compile(pattern, re.IGNORECASE).search(text, start)
    return (found.start(), found.end()) if found else None


def copied(text: str, corpus: str) -> list[tuple[int, int]]:
    """The character ranges of `text` that `corpus` holds word for word (spacing aside), each
    at least COPY_CHARS long; `corpus` with every run of whitespace one space."""
    flat, where = [], []  # text with its whitespace runs as one space; each character's index
    for word in re.finditer(r"\S+", text):
        if flat:
            flat.append(" ")
            where.append(word.start() - 1)
        flat.extend(word.group())
        where.extend(range(word.start(), word.end()))
    joined = "".join(flat)
    ranges: list[tuple[int, int]] = []
    for i in range(len(joined) - COPY_CHARS + 1):
        if joined[i : i + COPY_CHARS] in corpus:
            start, end = where[i], where[i + COPY_CHARS - 1] + 1
            if ranges and start <= ranges[-1][1]:
                start = ranges.pop()[0]
            ranges.append((start, end))
    return ranges


def bits_per_byte(
    model: SLM, tokenizer: SLMTokenizer, text: str, skip: list[tuple[int, int]] | None = None
) -> float | None:
    """Bits per byte of `text`'s tokens under `model` (BOS-conditioned, every token in its
    context), leaving out the tokens that touch the character ranges in `skip`; None if no
    token is left."""
    ids, offsets = tokenizer.encode_with_offsets(text)
    if not ids:
        return None
    logprobs = token_logprobs(model, ids, tokenizer.bos_id)
    kept = [i for i, (a, b) in enumerate(offsets)
            if all(b <= start or a >= end for start, end in skip or [])]  # fmt: skip
    size = sum(len(text[offsets[i][0] : offsets[i][1]].encode("utf-8")) for i in kept)
    if not size:
        return None
    return -float(logprobs[kept].sum()) / (size * math.log(2))


def past_quote(model: SLM, tokenizer: SLMTokenizer, answer: str, lead: str) -> float | None:
    """Bits per byte of what `answer` says past its opening quote `lead`, given the quote; None
    when it does not open with it (a fail-over, or no quote) or says nothing more."""
    if not lead or not answer.startswith(lead):
        return None
    return bits_per_byte(model, tokenizer, answer, [(0, len(lead))])


def source_passage(text: str, fact: Fact) -> str:
    """The corpus around the fact's span: what an answer quoting the corpus reads like."""
    where = span_at(text, fact.answer, fact.offset) or (fact.offset, fact.offset)
    return text[max(0, where[0] - SOURCE_CHARS) : where[1] + SOURCE_CHARS]


def fluency(
    answers: list[Answered], texts: dict[str, str], references: dict[str, str]
) -> dict[str, list[float]]:
    """Bits per byte under the base model of each system's answers, of the three-model
    answers' own words and of what they say past their quote, and of the facts' corpus
    passages (`texts`: domain -> the text its facts were taken from; `references`: domain ->
    its node's reference text)."""
    base = pretrained.load(DEFAULT_BASE)
    model = SLM.for_loading(base.config)
    model.load_state_dict(base.state, strict=True, assign=True)
    model.eval()
    out: dict[str, list[float]] = {s: [] for s in (*SYSTEMS, AROUND, AFTER, SOURCE)}
    flat = {d: " ".join(t.split()) for d, t in texts.items()}
    indexed = {d: Reference(passages(t)) for d, t in references.items()}

    def add(key: str, value: float | None) -> None:
        if value is not None:
            out[key].append(value)

    for a in answers:
        for system in SYSTEMS:
            add(system, bits_per_byte(model, base.tokenizer, a.texts[system]))
        three = a.texts["three-model"]
        add(AROUND, bits_per_byte(model, base.tokenizer, three, copied(three, flat[a.fact.domain])))
        lead = quote(indexed[a.routed], a.fact.question) if a.routed in indexed else ""
        add(AFTER, past_quote(model, base.tokenizer, three, lead))
        passage = source_passage(texts[a.fact.domain], a.fact)
        add(SOURCE, bits_per_byte(model, base.tokenizer, passage))
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
        "after_n": len(bpb[AFTER]),
        "refine_s": float(np.mean([a.seconds for a in answers])),
        "examples": [
            {"of": a.fact.domain, "question": a.fact.question, "span": a.fact.answer, **a.texts}
            for a in answers[:: max(1, len(answers) // len(domains))][: len(domains)]
        ],
    }  # fmt: skip


def adapters(work: Path, corpora: dict[str, str], steps: int) -> dict[str, Path]:
    """A rank-16 adapter of the base per domain, `steps` steps on the training split of its
    corpus; one already in `work` from the same text and steps is reused."""
    from evaluation.run import give_words, reusable

    base = pretrained.load(DEFAULT_BASE)
    cfg = replace(ADAPTER_TRAIN, max_steps=steps, max_epochs=None, patience=10**6,
                  eval_interval=max(1, steps // 2))  # fmt: skip
    out = {}
    for i, (domain, text) in enumerate(corpora.items(), 1):
        train_text, _ = split_corpus(text, 0.1)
        folder = work / "models" / f"adapter-{domain}"
        if reusable(folder, train_text, steps):
            give_words(folder, train_text)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            began = time.monotonic()
            print(f"[{i}/{len(corpora)}] the {domain} adapter ({steps} steps) ...", flush=True)
            train(train_text, domain, folder, base.config, cfg, base=base, adapter=AdapterConfig())
            print(f"    {time.monotonic() - began:.0f} s", flush=True)
        out[domain] = folder
    return out


def generalist_model(work: Path, corpora: dict[str, str]) -> Path:
    """The embedded base imported whole, calibrated on a slice of every corpus."""
    folder = work / "models" / "generalist"
    if not (folder / "config.json").exists():
        sample = "\n".join(text[:20_000] for text in corpora.values())
        import_base(pretrained.load(DEFAULT_BASE), sample, "general", folder)
    return folder


def section(r: dict, steps: int, command: str) -> str:
    """The fact evaluation's part of docs/evaluation.md."""
    rows = "\n".join(
        f"| {d} | {r['facts'][d]} | " + " | ".join(str(r["recall"][d][s]) for s in SYSTEMS) + " |"
        for d in r["domains"]
    )
    total = sum(r["facts"].values())
    t = r["total"]
    bpb = r["bpb"]
    recall_met = t["three-model"] >= t["domain"] and t["three-model"] >= 3 * t["generalist"]
    whole_met = bpb["three-model"] <= 1.1 * bpb["generalist"]
    after_met = bpb[AFTER] <= 1.1 * bpb["generalist"]
    ex = "\n".join(
        f"- **{e['of']}**: {e['question']} (span: *{e['span']}*)\n"
        + "\n".join(f"  - {s}: {' '.join(e[s].split())[:240]!r}" for s in SYSTEMS)
        for e in r["examples"]
    )
    return f"""{BEGIN}
## Does the domain node add what the generalist lacks?

`{command}`, {time.strftime("%Y-%m-%d")}: {r["per_domain"]} facts per shipped domain
(evaluation/facts.py: spans only that corpus holds, from its node's training split), asked
through a real hub with a generalist node (the embedded base, `--role generalist`) and one
adapter node per domain (rank 16, {steps} steps on its corpus, joined with the corpus as
`--reference`), greedily, {MAX_TOKENS} tokens. Generalist alone: the draft; domain node alone:
mode direct pinned to the fact's domain; three-model: mode refine, routed by the hub.

| domain | facts | {" | ".join(SYSTEMS)} |
|---|---|---|---|---|
{rows}
| **all** | {total} | {t["generalist"]} | {t["domain"]} | {t["three-model"]} |

Fluency, bits per byte of the answers under the base model (lower reads more like the base's
own writing): generalist {r["bpb"]["generalist"]:.3f}, domain node
{r["bpb"]["domain"]:.3f}, three-model {r["bpb"]["three-model"]:.3f}
({(r["bpb"]["three-model"] / r["bpb"]["generalist"] - 1) * 100:+.1f}% against the generalist;
target within 10%). The three-model answers' own words (their tokens outside every stretch of
{COPY_CHARS} or more characters they copy from their domain's corpus):
{r["bpb"][AROUND]:.3f} ({(r["bpb"][AROUND] / r["bpb"]["generalist"] - 1) * 100:+.1f}%). What the
writer wrote past the node's quote, given the quote ({r["after_n"]} answers that go on past it):
{r["bpb"][AFTER]:.3f} ({(r["bpb"][AFTER] / r["bpb"]["generalist"] - 1) * 100:+.1f}%). The
corpus passages that hold the facts (each span and {SOURCE_CHARS} characters either side) read
at {r["bpb"][SOURCE]:.3f} under the base: an answer that quotes its fact carries text the base
finds that unlike its own writing, so the whole answer's figure weighs recall against fluency,
and its own words are what judge the writing. The refine Ask
took {r["refine_s"]:.1f} s on average, draft included, with {r["parallel"]} facts asked at a time;
{r["routed_right"]} of {total} three-model answers were refined by the fact's own domain.

Targets: three-model recall >= domain node alone ({t["three-model"]} vs {t["domain"]}) and
>= 3x the generalist ({t["three-model"]} vs 3 x {t["generalist"]}): {verdict(recall_met)};
whole answers within 10% of the generalist's bits per byte: {verdict(whole_met)}; what the
writer wrote past the quote within 10%: {verdict(after_met)}.

Examples:

{ex}
{END}"""


BEGIN, END = "<!-- facts:begin -->", "<!-- facts:end -->"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def with_section(document: str, block: str) -> str:
    """`document` with its fact section replaced by `block` (appended when it has none)."""
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return document.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=40, help="per domain (default: 40)")
    parser.add_argument("--steps", type=int, default=40, help="adapter steps (default: 40)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "eval-facts",
                        help="models and answers, both kept for a later run "
                        "(a stopped run asks only what it had not)")  # fmt: skip
    parser.add_argument("--parallel", type=int, default=2,
                        help="facts asked at a time (default: 2; on 2 cores, 7.5 s a fact "
                        "against 8.8 s one at a time)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    corpora = {p.stem: read_corpus(p) for p in sorted(CORPORA.glob("*.txt"))}
    sets = fact_sets(corpora, args.facts)
    folders = adapters(args.work, corpora, args.steps)
    generalist = generalist_model(args.work, corpora)
    references = {d: CORPORA / f"{d}.txt" for d in corpora}
    print(f"asking {sum(map(len, sets.values()))} facts ...", flush=True)
    log = AnswerLog(args.work / "answers.jsonl", answers_stamp([generalist, *folders.values()]))
    answers = ask_facts(args.work / "run", generalist, folders, references, sets, log,
                        max(1, args.parallel))  # fmt: skip
    texts = {d: split_corpus(text, 0.1)[0] for d, text in corpora.items()}  # the facts' source
    atomic_write_text(args.work / "facts.json", json.dumps([a.row() for a in answers]))
    result = summary(answers, fluency(answers, texts, corpora)) | {
        "per_domain": args.facts, "parallel": max(1, args.parallel)}  # fmt: skip
    command = "python -m evaluation.three_model" + (
        f" --facts {args.facts}" if args.facts != 40 else "") + (
        f" --steps {args.steps}" if args.steps != 40 else "")  # fmt: skip
    block = section(result, args.steps, command)
    print(block)
    if not args.no_write:
        path = ROOT / "docs" / "evaluation.md"
        atomic_write_text(path, with_section(path.read_text(encoding="utf-8"), block))
        print("wrote docs/evaluation.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
