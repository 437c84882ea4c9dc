"""A refining node's reference text: BM25 over its passages finds a fact by its rare words,
and the quote an answer opens with is the words that answer the question, as written."""

from __future__ import annotations

import pytest

from slm.refine import quote, units
from slm.retrieval import BM25, Reference, passages, terms
from tests.conftest import CORPORA

ICD = """Diseases of middle ear and mastoid (H65-H75)
Nonsuppurative otitis media
exposure to environmental tobacco smoke (Z77.22)
exposure to tobacco smoke in the perinatal period (P96.81)
Acute serous otitis media, right ear
"""
LICENCE = """   "Derivative Works" shall mean any work, whether in Source or Object
      form, that is based on (or derived from) the Work and for which the
      editorial revisions, annotations, elaborations, or other modifications
      represent, as a whole, an original work of authorship.

   You may charge a reasonable copying fee for any distribution of this Package. You may
   charge any fee you choose for support of this Package.
"""
CODE = '''class Pack:
    def slaves(self):
        """Return a list of all slaves of this widget in its packing order."""
        return [self._nametowidget(x) for x in self.tk.splitlist(self._w)]

    def other(self):
        return None
'''


def test_terms_keep_codes_and_names_whole_and_drop_function_words() -> None:
    assert terms("What does code Z77.22 of get_long_description() mean?") == [
        "code", "z77.22", "get_long_description", "mean"]  # fmt: skip


def test_bm25_ranks_the_passage_with_the_rare_word_first() -> None:
    docs = [f"code {i}: use the code, code it" for i in range(8)]
    docs += ["code: exposure (Z77.22) to smoke", "nothing at all"]
    scores = BM25(docs).scores("What does the code Z77.22 stand for?")
    assert scores.argmax() == 8 and scores[9] == 0


def test_passages_cover_the_text_at_line_and_sentence_ends() -> None:
    text = (CORPORA / "religion.txt").read_text(encoding="utf-8")
    cut = passages(text)
    assert all(p.strip() and len(p) < 2 * 400 + 200 for p in cut)
    assert " ".join(" ".join(cut).split()) == " ".join(text.split())


def test_a_hard_wrapped_clause_is_one_unit_and_a_list_keeps_its_lines() -> None:
    assert units(LICENCE)[0].startswith('"Derivative Works" shall mean any work, whether')
    assert "original work of authorship." in units(LICENCE)[0]
    assert units(ICD)[2] == "exposure to environmental tobacco smoke (Z77.22)"


@pytest.mark.parametrize(
    ("text", "question", "has"),
    [
        (ICD, "What does the ICD-10-CM code Z77.22 stand for?",
         "exposure to environmental tobacco smoke (Z77.22)"),
        (LICENCE, "In the Artistic License, what words follow “You may charge a reasonable "
         "copying fee for any distribution”?", "of this Package. You may charge any fee"),
        (CODE, "What does the function slaves(self) return?",
         "return [self._nametowidget(x) for x in self.tk.splitlist(self._w)]"),
    ],
)  # fmt: skip
def test_the_quote_holds_the_words_that_answer(text: str, question: str, has: str) -> None:
    found = quote(Reference(passages(text)), question)
    assert has in found and len(found) <= 330
    if text is ICD:  # a list's line alone: the next line is another fact
        assert found == has


def test_no_shared_word_no_quote() -> None:
    assert quote(Reference(passages(ICD)), "Quantum chromodynamics?") == ""
