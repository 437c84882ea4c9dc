import subprocess
import sys

import numpy as np

from slm.profile import PROFILE_DIM, corpus_profile, embed, passages
from tests.conftest import CORPORA, held_out_split

DOMAINS = sorted(p.stem for p in CORPORA.glob("*.txt"))


def test_profile_vectors_are_unit_length_and_identical_across_processes() -> None:
    text = "Malignant neoplasm of the left retina and choroid"
    vec = embed(text)
    assert vec.shape == (PROFILE_DIM,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    code = f"from slm.profile import embed; print(embed({text!r}).tolist())"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert np.allclose(eval(other.stdout), vec)


def test_nearest_profile_finds_the_domain_of_held_out_passages() -> None:
    splits = {d: held_out_split(d) for d in DOMAINS}
    profiles = np.stack([corpus_profile(splits[d][0]) for d in DOMAINS])
    hits = total = 0
    for i, d in enumerate(DOMAINS):
        for passage in passages(splits[d][1], 400)[:20]:
            hits += int(np.argmax(profiles @ embed(passage)) == i)
            total += 1
    assert hits / total > 0.85, f"nearest-profile accuracy {hits / total:.2f}"


def test_text_without_words_has_a_zero_vector() -> None:
    assert not embed("1234 !!! 42").any()
