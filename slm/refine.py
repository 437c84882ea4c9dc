"""Refining a draft: a domain node answers a prompt that a generalist has drafted, bringing the
facts its own reference text holds, in the generalist's fluent words.

Measured before this was written (docs/evaluation.md): a 135M instruct model given retrieved
passages in its prompt, with or without the draft, answers past them (asked what ICD-10-CM code
C49.0 stands for, with the passage that says it in its prompt, it names a spinal injury), and a
domain adapter writes in its corpus's list style. What works is to let the text carry the fact:
the answer opens with the one sentence of the reference that best answers the prompt, quoted
as it is written, and the pretrained base (the generalist's weights, shared by every adapted
node) writes on from it. The domain node's knowledge is in which sentence it quotes (found in
text only it holds); the fluency is the base's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slm import pretrained
from slm.errors import ConfigError
from slm.generate import SamplingParams, stream_counted
from slm.model import SLM
from slm.model_folder import LoadedModel
from slm.retrieval import Reference, passages, terms
from slm.serving import Precision, for_serving
from slm.tokenizer import SLMTokenizer
from slm.train import read_corpus

QUOTE_CHARS = 320  # at most a sentence or two: the answer is the writer's, the quote its fact
PASSAGES = 3  # the passages a quote is chosen from
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLOSED = re.compile(r"[.!?:;)\]]\s*$")


def units(passage: str) -> list[str]:
    """A passage's quotable units: sentences, or lines where the text is a list. A hard-wrapped
    line (long, unfinished, followed by a lower-case continuation) is joined to the next."""
    joined: list[str] = []
    for line in passage.split("\n"):
        last = joined[-1] if joined else ""
        if len(last) >= 60 and not _CLOSED.search(last) and re.match(r"\s*[a-z(\[]", line):
            joined[-1] = f"{last.rstrip()} {line.strip()}"
        else:
            joined.append(line)
    return [u.strip() for j in joined for u in _SENTENCE_END.split(j) if u.strip()]


def quote(reference: Reference, query: str) -> str:
    """The words of the reference that best answer the query, as written; empty when no
    passage shares a word with it. A phrase the query quotes is looked for as a phrase and
    quoted with what follows it; otherwise the unit (sentence, or line of a list) sharing the
    most, and rarest, words with the query, with its block if it opens one (a function)."""
    quoted, call = _QUOTED.search(query), _CALL.search(query)
    if quoted or call:
        phrase = (quoted or call).group(1)  # type: ignore[union-attr]
        found = _continuation(reference, phrase, FOLLOW if quoted else BODY)
        if found:
            return found
    return _best_unit(reference, query)


_QUOTED = re.compile(r"[“\"]([^”\"]{12,})[”\"]")  # a phrase in quotes
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_.]*\([^()]*\))")  # a function named with its args
_WORD = re.compile(r"[A-Za-z0-9]+")
FOLLOW = 10  # words quoted past a quoted phrase: what "follows" it
BODY = 40  # words quoted past a function's name: its body, as far as the quote's length allows
MIN_PHRASE = 3  # words of a quoted phrase that must be found in a row


def _continuation(reference: Reference, phrase: str, follow: int) -> str:
    """The sentence of the passages in which the longest run of the phrase's words begins,
    through `follow` words past the run."""
    wanted = [w.lower() for w in _WORD.findall(phrase)]
    best: tuple[int, str, int, int] = (0, "", 0, 0)  # run length, text, first, last word index
    for i in reference.search(phrase, 3 * PASSAGES):
        text = " ".join(reference.passages[i].split())
        words = [w.group(0).lower() for w in _WORD.finditer(text)]
        run = [0] * (len(wanted) + 1)
        for k, word in enumerate(words):  # longest common run of words, by dynamic programming
            for n in range(len(wanted), 0, -1):
                run[n] = run[n - 1] + 1 if wanted[n - 1] == word else 0
                if run[n] > best[0]:
                    best = (run[n], text, k - run[n] + 1, k)
    length, text, first, last = best
    if length < MIN_PHRASE:
        return ""
    spans = list(_WORD.finditer(text))
    start = spans[first].start()
    sentence = max(
        text.rfind(". ", 0, start), text.rfind("? ", 0, start), text.rfind("! ", 0, start)
    )
    if sentence >= 0 and start - sentence < QUOTE_CHARS // 2:
        start = sentence + 2
    end = spans[min(last + follow, len(spans) - 1)].end()
    stop = _SENTENCE_END.search(text, end)
    if stop and stop.start() - start <= QUOTE_CHARS:
        end = stop.start()
    return _cut(text[start:end])


def _best_unit(reference: Reference, query: str) -> str:
    wanted = set(terms(query))
    postings, size = reference.index.postings, max(len(reference.passages), 1)
    weight = {t: math.log(1 + size / len(postings[t])) for t in wanted if t in postings}
    best, best_score = "", 0.0
    for i in reference.search(query, PASSAGES):
        passage = reference.passages[i]
        for unit in units(passage):
            score = sum(weight[t] for t in set(terms(unit)) & weight.keys())
            if score > best_score:
                best, best_score = _with_block(passage, unit), score
    return _cut(best)


def _with_block(passage: str, unit: str) -> str:
    """A line that opens a block (`def f(x):`) with the lines indented under it."""
    if not unit.endswith(":"):
        return unit
    lines = passage.split("\n")
    at = next((n for n, line in enumerate(lines) if line.strip() == unit), None)
    if at is None:
        return unit
    indent = len(lines[at]) - len(lines[at].lstrip())
    block = [lines[at].strip()]
    for line in lines[at + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line[indent:] if line.strip() else "")
    return "\n".join(block).strip()


def _cut(text: str) -> str:
    if len(text) <= QUOTE_CHARS:
        return text
    return text[: text.rfind(" ", 0, QUOTE_CHARS)].rstrip(",;:") + " …"


@dataclass
class Refiner:
    """What a refining node needs: its reference text and a writer (the base: the
    generalist's weights) with its tokenizer."""

    reference: Reference
    writer: SLM
    tokenizer: SLMTokenizer

    def stream(
        self, prompt: str, params: SamplingParams, answer_so_far: str = ""
    ) -> Iterator[tuple[str, int]]:
        """(piece, tokens so far) of the refined answer, as slm.generate.stream_counted: the
        quoted fact, then the writer's words. The quote is chosen by the prompt alone (as the
        node was): the draft may be wrong about the facts, which is why a node refines. On
        fail-over (`answer_so_far`), the quote is already in the answer: the writer goes on
        from it."""
        lead = "" if answer_so_far else quote(self.reference, prompt)
        yield from stream_counted(self.writer, self.tokenizer, prompt, params, answer_so_far,
                                  lead)  # fmt: skip


def load_refiner(loaded: LoadedModel, reference: Path, precision: Precision = "fp32") -> Refiner:
    """A node's refiner: the passages of its `reference` text (a file or a folder of them), and
    as writer the base its model adapts (an imported base is its own writer). A model trained
    from scratch has no chat template and cannot follow a prompt: ConfigError."""
    if loaded.tokenizer.chat_template is None:
        raise ConfigError(
            "--reference needs a model that can follow a prompt: an adapter of a pretrained base "
            "(slm-node train --base) or an imported base (slm-node import); this model was "
            "trained from scratch"
        )
    text = read_corpus(reference)
    if loaded.base is None or "adapter" not in loaded.base:  # an imported base: itself
        writer = loaded.model
    else:
        base = pretrained.load(str(loaded.base.get("name") or loaded.base.get("source")))
        if base.sha256 != loaded.base.get("sha256"):
            raise ConfigError(f"the base here is not the one {loaded.path} was trained on")
        writer = SLM.for_loading(base.config)
        writer.load_state_dict(base.state, strict=True, assign=True)  # shared with the cache
        writer = for_serving(writer.eval(), precision)
    return Refiner(Reference(passages(text)), writer, loaded.tokenizer)
