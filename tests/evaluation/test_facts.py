"""The three-model evaluation's facts: for every shipped domain, 40 questions whose answer is a
span of its node's training text that no other corpus holds."""

from __future__ import annotations

from pathlib import Path

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


def test_fluency_of_an_answers_own_words_leaves_out_what_it_copies_and_only_that() -> None:
    import math

    import torch

    from evaluation.three_model import bits_per_byte, past_quote, source_passage, span_at
    from slm.config import ModelConfig
    from slm.model import SLM
    from slm.tokenizer import SLMTokenizer

    answer = "It means “Exposure to environmental\ntobacco smoke.” Ask a doctor."
    where = span_at(answer, "exposure to environmental tobacco smoke")
    assert where is not None
    assert answer[where[0] : where[1]] == "Exposure to environmental\ntobacco smoke"
    assert span_at("overexposure to environmental tobacco smoke", "exposure to environmental "
                   "tobacco smoke") is None  # fmt: skip
    assert span_at(answer, "tobacco smoke", start=where[1]) is None

    tok = SLMTokenizer.train([answer * 20, TEXTS["medicine"][:20_000]], vocab_size=400)
    torch.manual_seed(0)
    model = SLM(ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                            d_model=32, d_ff=64)).eval()  # fmt: skip
    whole = bits_per_byte(model, tok, answer)
    around = bits_per_byte(model, tok, answer, [where])
    assert whole is not None and around is not None and not math.isclose(whole, around)
    ids, offsets = tok.encode_with_offsets(answer)
    assert ids == tok.encode(answer) and offsets[-1][1] == len(answer)
    assert bits_per_byte(model, tok, answer, [(0, 9), (9, len(answer))]) is None  # none left
    assert bits_per_byte(model, tok, "") is None
    lead = "It means “Exposure to environmental\ntobacco smoke.”"
    past = past_quote(model, tok, answer, lead)
    assert past is not None and not math.isclose(past, whole)
    assert past_quote(model, tok, answer, "It says") is None  # not how the answer opens
    assert past_quote(model, tok, answer, "") is None  # no quote
    assert past_quote(model, tok, answer, answer) is None  # nothing past it

    text = "x" * 300 + " Exposure to environmental tobacco smoke (Z77.22) " + "y" * 300
    fact = Fact("medicine", "icd-code", "Q?", "exposure to environmental tobacco smoke", 290)
    passage = source_passage(text, fact)
    assert "Exposure to environmental tobacco smoke" in passage
    assert len(passage) == len("Exposure to environmental tobacco smoke") + 2 * 120


def test_a_copied_stretch_is_found_across_the_corpus_line_breaks_and_nothing_shorter() -> None:
    from evaluation.three_model import COPY_CHARS, copied

    text = "Otitis media with effusion,\n  right ear, not elsewhere classified."
    corpus = " ".join(text.split())  # as fluency() flattens a corpus
    answer = "Here: Otitis media with effusion, right\near, not elsewhere classified. It is common."
    (start, end), *rest = copied(answer, corpus)
    assert not rest
    assert answer[start:end] == "Otitis media with effusion, right\near, not elsewhere classified."
    assert copied("Otitis media with effusion" + " is an ear disease.", corpus) == []
    assert len("Otitis media with effusion") < COPY_CHARS


def test_a_stopped_runs_answers_are_kept_for_the_same_models_and_dropped_for_others(
    tmp_path: Path,
) -> None:
    from evaluation.three_model import Answered, AnswerLog, answers_stamp, ask_facts, fact_key

    models = []
    for name in ("generalist", "adapter-law"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(f'{{"name": "{name}"}}')
        models.append(tmp_path / name)
    stamp = answers_stamp(models)
    first = Fact("law", "cloze", "Q1?", "span number one", 1)
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, stamp)
    assert log.load() == {}
    kept = Answered(first, {"generalist": "g", "domain": "d", "three-model": "t"}, "law", 1.5)
    log.add(kept)
    with path.open("a") as out:
        out.write('{"fact": {"domain": "law", "ques')  # a line the stop cut short
    log = AnswerLog(path, stamp)
    assert log.load() == {fact_key(first): kept}
    second = Fact("law", "cloze", "Q2?", "span number two", 2)
    after = Answered(second, {"generalist": "", "domain": "", "three-model": ""}, "news", 2.0)
    log.add(after)  # after a cut line: a line of its own, not joined to the cut one
    assert AnswerLog(path, stamp).load() == {fact_key(first): kept, fact_key(second): after}
    # every fact already answered: no hub is started (its folders would not exist)
    assert ask_facts(tmp_path / "run", models[0], {}, {}, {"law": [first]}, log) == [kept]
    assert not (tmp_path / "run").exists()

    (models[1] / "config.json").write_text('{"name": "adapter-law", "steps": 80}')
    retrained = answers_stamp(models)
    assert retrained != stamp
    assert AnswerLog(path, retrained).load() == {}  # another model's answers are not reported
    assert AnswerLog(path, stamp).load() == {}  # and were started over, not kept beside
