"""Domain facts for the three-model evaluation: questions whose answer is a span of text that
only one shipped corpus holds, taken from the text a domain node trains on.

Each domain's facts are of the most specific kind its text allows: the description an
ICD-10-CM code stands for (medicine), the expression a named Python function returns (code),
how WordNet defines a term (science), and elsewhere the words that follow a quoted sentence
opening in a named text (a verse of the World English Bible, a clause of a named licence, a
line of Moby-Dick, a State of the Union address, ...). An answer recalls a fact when its
normalised text contains the normalised span. Facts are chosen deterministically, spread over
the corpus, and only where the span appears in no other shipped corpus and the question's cue
(code, name or quoted opening) once in its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

SPAN_WORDS = 5  # a cloze answer: the next five words
CUE_WORDS = 10  # a cloze cue: the sentence's first ten words
MIN_SPAN_WORDS = 3  # shorter spans are too easy to hit by chance
MAX_SPAN_WORDS = 8  # a definition's first eight words: enough to show it is known


@dataclass(frozen=True)
class Fact:
    domain: str
    kind: str  # icd-code, python-return, wordnet-gloss or cloze
    question: str
    answer: str  # the span a correct answer contains
    offset: int  # where the span starts in the corpus


def normalise(text: str) -> str:
    """Lower case, every run of non-alphanumeric characters one space: a span is recalled in
    any spacing, quoting or punctuation."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def recalled(answer: str, fact: Fact) -> bool:
    return f" {normalise(fact.answer)} " in f" {normalise(answer)} "


# --- candidates: (kind, question, span, offset) from one corpus, in text order --------------

Candidate = tuple[str, str, str, int]

_ICD = re.compile(r"^([a-z][^\n(]{8,120}?) \(([A-Z][0-9]{2}\.[0-9A-Z]{1,4})\)$", re.M)
_DEF = re.compile(r"^( *)def ([A-Za-z_][A-Za-z0-9_]*)\(([^)\n]*)\)[^\n]*:\n", re.M)
_GLOSS = re.compile(r"^([A-Za-z][A-Za-z -]{2,40}): ([a-z][^\n;:]{20,200})$", re.M)
_PARAGRAPH = re.compile(r"\S(?:.|\n(?!\s*\n))*")  # lines up to a blank line
_START = re.compile(r"(?:^|(?<=[.!?;:]\s))[A-Z“\"]")  # where a sentence or clause opens


def _icd(text: str) -> Iterator[Candidate]:
    for m in _ICD.finditer(text):
        if m.group(1).startswith(("code", "use additional")):  # a coding note, not a name
            continue
        question = f"What does the ICD-10-CM code {m.group(2)} stand for?"
        yield "icd-code", question, m.group(1), m.start(1)


def _returns(text: str) -> Iterator[Candidate]:
    for m in _DEF.finditer(text):
        indent, body = len(m.group(1)), []
        for line in text[m.end() :].splitlines():
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        returns = [r for r in (re.match(r"\s*return (.+)$", ln) for ln in body) if r]
        if len(returns) == 1 and _balanced(returns[0].group(1)):
            name, args = m.group(2), m.group(3)
            question = (f"In Python's standard library, what does the function {name}({args}) "
                        "return? Give the expression it returns.")  # fmt: skip
            yield "python-return", question, returns[0].group(1), m.start()


def _docstrings(text: str) -> Iterator[Candidate]:
    for m in _DEF.finditer(text):
        doc = re.match(r'\s*"""([A-Z][^."]{15,150})[."]', text[m.end() : m.end() + 400])
        if doc:
            question = (f"In Python's standard library, what does the docstring of "
                        f"{m.group(2)}({m.group(3)}) say it does?")  # fmt: skip
            span = " ".join(doc.group(1).split()[:MAX_SPAN_WORDS])
            yield "python-docstring", question, span, m.end()


def _balanced(code: str) -> bool:
    """A whole expression on its line: every bracket it opens, it closes."""
    depth = 0
    for c in code:
        depth += (c in "([{") - (c in ")]}")
        if depth < 0:
            return False
    return depth == 0


def _glosses(text: str) -> Iterator[Candidate]:
    for m in _GLOSS.finditer(text):
        span = " ".join(m.group(2).split(" ")[:MAX_SPAN_WORDS])
        yield "wordnet-gloss", f"How does WordNet define “{m.group(1)}”?", span, m.start(2)


def _cloze(name: Callable[[str, int], str]) -> Callable[[str], Iterator[Candidate]]:
    def candidates(text: str) -> Iterator[Candidate]:
        for para in _PARAGRAPH.finditer(text):
            flat = " ".join(para.group(0).split())  # hard-wrapped lines joined
            for start in _START.finditer(flat):
                words = flat[start.start() :].split(" ")[: CUE_WORDS + SPAN_WORDS]
                if len(words) < CUE_WORDS + SPAN_WORDS:
                    break
                cue, span = " ".join(words[:CUE_WORDS]), " ".join(words[CUE_WORDS:])
                question = f"In {name(text, para.start())}, what words follow “{cue}”?"
                yield "cloze", question, span.rstrip(",;:"), para.start()

    return candidates


def _merged(*sources: Iterator[Candidate]) -> Iterator[Candidate]:
    """Several kinds of fact from one text, in text order."""
    return iter(sorted((c for s in sources for c in s), key=lambda c: c[3]))


def _named(label: str) -> Callable[[str, int], str]:
    return lambda text, at: label


_LICENCES = (
    ("Apache License", "the Apache License 2.0"),
    ("Mozilla Public License Version 2.0", "the Mozilla Public License 2.0"),
    ("GNU GENERAL PUBLIC LICENSE", "the GNU General Public License version 3"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "the GNU Lesser General Public License version 2.1"),
    ('The "Artistic License"', "the Artistic License"),
    ("Redistribution and use in source and binary forms", "the BSD licence"),
    ("Creative Commons Legal Code", "the Creative Commons CC0 1.0 dedication"),
)


def _licence(text: str, at: int) -> str:
    """The licence whose heading (a line of its own) comes last before `at`."""
    best, name = -1, "a software licence"
    for heading, label in _LICENCES:
        found = text.rfind("\n" + heading, 0, at)
        start = 0 if text.startswith(heading) and found < 0 else found
        if start > best:
            best, name = start, label
    return name


def _literature(text: str, at: int) -> str:
    line = text[text.rfind("\n", 0, at) + 1 : text.find("\n", at)]
    return "Moby-Dick" if len(line) > 150 else "a Shakespeare play"


KINDS: dict[str, Callable[[str], Iterator[Candidate]]] = {
    "medicine": _icd,
    "code": lambda text: _merged(_returns(text), _docstrings(text)),
    "science": _glosses,
    "religion": _cloze(_named("the World English Bible")),
    "law": _cloze(_licence),
    "literature": _cloze(_literature),
    "politics": _cloze(_named("a US State of the Union address")),
    "news": _cloze(_named("a 1961 American newspaper report (the Brown Corpus)")),
    "computing": _cloze(_named("the Jargon File or the Python or PostgreSQL documentation")),
}


def facts(domain: str, text: str, others: list[str], count: int = 40) -> list[Fact]:
    """`count` facts of `domain` from `text` (the node's training text), spread evenly over
    the usable candidates: spans of at least MIN_SPAN_WORDS words that no text in `others`
    holds, behind a cue that appears once in `text`."""
    norm_text = f" {normalise(text)} "
    elsewhere = " ".join(f" {normalise(o)} " for o in others)
    usable = []
    for kind, question, span, at in KINDS[domain](text):
        key = normalise(span)
        cue = normalise(question.split("“")[1]) if "“" in question else normalise(question)
        if len(key.split()) < MIN_SPAN_WORDS or f" {key} " in elsewhere:
            continue
        if kind in ("cloze", "wordnet-gloss") and norm_text.count(f" {cue} ") != 1:
            continue
        usable.append(Fact(domain, kind, question, span, at))
    seen: set[str] = set()
    unique = [f for f in usable if not (f.question in seen or seen.add(f.question))]
    if len(unique) <= count:
        return unique
    step = len(unique) / count
    return [unique[int(i * step)] for i in range(count)]
