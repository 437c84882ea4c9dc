"""The three-model evaluation's facts: for every shipped domain, 40 questions whose answer is a
span of its node's training text that no other corpus holds."""

from __future__ import annotations

from evaluation.facts import Fact, facts, normalise, recalled
from slm.train import read_corpus, split_corpus
from tests.conftest import CORPORA

TEXTS = {p.stem: read_corpus(p) for p in sorted(CORPORA.glob("*.txt"))}


def test_every_domain_gets_40_facts_only_its_training_text_holds() -> None:
    for domain, text in TEXTS.items():
        train_text, _ = split_corpus(text, 0.1)
        others = [t for d, t in TEXTS.items() if d != domain]
        found = facts(domain, train_text, others)
        assert len(found) == 40, domain
        assert len({f.question for f in found}) == 40
        for fact in found:
            span = f" {normalise(fact.answer)} "
            assert span in f" {normalise(train_text)} ", (domain, fact)
            assert all(span not in f" {normalise(o)} " for o in others), (domain, fact)
            assert len(normalise(fact.answer).split()) >= 3


def test_recall_ignores_case_spacing_and_punctuation_but_not_words() -> None:
    fact = Fact("medicine", "icd-code", "Q?", "exposure to environmental tobacco smoke", 0)
    assert recalled("It means “Exposure to environmental\ntobacco smoke.”", fact)
    assert not recalled("exposure to tobacco smoke", fact)
    assert not recalled("overexposure to environmental tobacco smokes", fact)


def test_the_fact_section_replaces_its_old_self_and_keeps_the_rest() -> None:
    from evaluation.three_model import BEGIN, END, with_section

    first = with_section("# Routing\n\nfigures\n", f"{BEGIN}\nold\n{END}")
    assert first == f"# Routing\n\nfigures\n\n{BEGIN}\nold\n{END}\n"
    second = with_section(first + "\n## After\n", f"{BEGIN}\nnew\n{END}")
    assert second == f"# Routing\n\nfigures\n\n{BEGIN}\nnew\n{END}\n\n## After\n"
