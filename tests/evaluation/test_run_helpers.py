"""The evaluation's plain helpers: a node's training text gives each training source an equal
share of the bytes, so a domain's biggest source does not crowd out the others; the report says
whether one run's accuracy is far enough from the target to trust which side it is on; a model
kept from an earlier run is reused only when it was trained on the same text and steps."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from evaluation.report import margin_sentence, settings_section
from evaluation.routers import FULL, SIMILARITY
from evaluation.run import little_prompts, mix, reusable, unseen
from slm.train import read_corpus
from tests.conftest import CORPORA


def test_each_source_gets_an_equal_share_and_a_small_one_gives_its_rest_away() -> None:
    big, other, small = "a" * 10_000, "b" * 10_000, "c" * 500
    text = mix([big, other, small], 3_000)
    assert text.count("c") == 500  # under its share of 1,000: all of it
    assert text.count("a") == text.count("b") == 1_250  # the rest, halved
    assert len(text.replace("\n", "")) == 3_000


def test_sources_under_the_limit_are_kept_whole() -> None:
    assert mix(["one", "two"], 1_000) == "one\n\ntwo"


def test_the_report_says_when_a_run_is_too_close_to_the_target_to_call() -> None:
    close = margin_sentence(289 / 320, 320)
    assert "standard error is 1.7 points" in close and "(1 prompt)" in close
    assert "either side" in close
    assert "outside it" in margin_sentence(250 / 320, 320)


def test_a_kept_model_is_reused_only_for_the_same_text_and_steps(tmp_path: Path) -> None:
    assert not reusable(tmp_path, "text", 800)  # nothing there
    training = {"corpus_sha256": hashlib.sha256(b"text").hexdigest(),
                "train_config": {"max_steps": 800}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"training": training}))
    assert reusable(tmp_path, "text", 800)
    assert not reusable(tmp_path, "other text", 800)  # a corpus edit since
    assert not reusable(tmp_path, "text", 600)  # a preset edit since
    assert [f.name for f in tmp_path.iterdir()] == ["config.json"]  # asking writes nothing


def test_a_reused_model_without_word_counts_gets_those_of_its_text(tmp_path: Path) -> None:
    from evaluation.run import give_words
    from slm.word_counts import FILE, WordCounts

    give_words(tmp_path, "the law of the land")
    assert (tmp_path / FILE).read_bytes() == WordCounts.of_text("the law of the land").to_bytes()
    give_words(tmp_path, "other text")  # kept counts are never rewritten
    assert (tmp_path / FILE).read_bytes() == WordCounts.of_text("the law of the land").to_bytes()


def test_rewriting_the_routing_report_keeps_the_other_evaluations(tmp_path) -> None:
    from evaluation.run import OTHERS, keep_others

    doc = tmp_path / "evaluation.md"
    assert keep_others(doc, "# new\n") == "# new\n"
    doc.write_text(f"# old\n\n{OTHERS} -->\n\n## Facts\n")
    assert keep_others(doc, "# new\n") == f"# new\n\n{OTHERS} -->\n\n## Facts\n"


def test_a_little_data_prompt_that_repeats_a_shipped_corpus_is_not_unseen() -> None:
    shipped = " ".join(read_corpus(CORPORA / "code.txt").split())
    quoted = shipped[5_000:5_300]
    assert not unseen(quoted, shipped)
    assert not unseen("Something new and " + quoted[:60] + " then more new words.", shipped)
    assert unseen("A sentence no corpus holds, about sailing boats on a lake at dawn.", shipped)


def test_the_settings_table_reports_each_run_and_the_adapter_target() -> None:
    def run(source: str, kind: str, full: float) -> dict:
        return {
            "source": source, "kind": kind, "prompts": 4, "train_s": 60.0, "total_s": 180.0,
            "domains": ["law", "code"], "per_domain": {"law": 1.0, "code": full},
            "confusion": [[2, 0], [1, 1]],
            "accuracy": {FULL: full, "loglik only, all nodes": 0.5, SIMILARITY: 0.75,
                         "random": 0.5},
        }  # fmt: skip

    text = settings_section([run("large", "adapter", 0.95), run("little", "adapter", 0.75)])
    assert "| little data: the shipped ~100 KB corpora" in text and "**75.0%**" in text
    assert "code→law 1" in text
    assert "90% in every setting: **missed** (large data 95.0%, little data 75.0%)" in text


def test_little_data_prompts_skip_shipped_text_and_still_number_n() -> None:
    shipped_law = read_corpus(CORPORA / "law.txt")
    shipped = " ".join(shipped_law.split())
    new = " ".join(
        f"Paragraph {i} tells of boats, tides and harbour fees at dawn." for i in range(3000)
    )
    held = shipped_law[:60_000] + "\n" + new  # the first part repeats the shipped corpus
    prompts = little_prompts(held, 10, shipped, random.Random(0))
    assert len(prompts) == 10 and all(unseen(p, shipped) for p, _ in prompts)


def test_the_offline_word_counts_route_by_words_and_the_hubs_offsets_are_recovered() -> None:
    from evaluation.lexical import Counts, loglik_offsets, route
    from hub.routing.posterior import evidence

    training = {"law": "licence licensee warranty liability copyright " * 20,
                "medicine": "otitis media fracture chronic acute ear " * 20}  # fmt: skip
    prompts = [("law", "the licensee disclaims warranty"), ("medicine", "acute otitis of the ear")]
    assert route(prompts, training) == ["law", "medicine"]
    counts = Counts(training)
    assert counts.scores("warranty")["law"] > counts.scores("warranty")["medicine"]
    # the evidence the hub records for each candidate, from offsets the nodes signed
    truth_ll, truth_sim = {"law": -0.9, "medicine": -1.2}, {"law": 0.1, "medicine": 0.3}
    rng = random.Random(3)
    sizes = [rng.randrange(100, 600) for _ in range(9)]
    cands = []
    for size in sizes:
        row = {}
        for d in training:
            ll, sim = -size * rng.uniform(0.5, 2.0), rng.uniform(-0.2, 0.8)
            said = evidence(ll, size, sim, truth_ll[d], truth_sim[d], 1.35)
            row[d] = {"loglik": ll, "similarity": sim, "evidence": said}
        cands.append(row)
    found = loglik_offsets(cands, sizes, truth_sim, 1.35)
    assert found == pytest.approx(truth_ll, abs=1e-9)
