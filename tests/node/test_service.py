"""The node's serving logic: signed scores the hub can verify, signed streamed completions."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from node.identity import generate_key
from node.service import NodeService
from protos.signing import completion_bytes, score_bytes, verify
from protos.wire import SamplingParams
from slm.errors import SLMError
from slm.model_folder import read_words


@pytest.fixture(scope="module")
def service(trained) -> NodeService:
    return NodeService(trained["medicine"].load(), generate_key())


def test_scores_are_signed_over_the_canonical_statement(service: NodeService, trained) -> None:
    prompt = trained["medicine"].held_out[:200]
    s = service.score("req-1", prompt)
    centred = s.centred(service.centroid_sha256, service.words_sha256)
    statement = score_bytes(
        service.node_id, "req-1", prompt, s.loglik, s.bits_per_byte, s.confidence, s.declined,
        service.loaded.version, centred,
    )  # fmt: skip
    assert verify(service.public_key, s.signature, statement)
    tampered = score_bytes(
        service.node_id, "req-1", prompt, s.loglik + 50, s.bits_per_byte, s.confidence,
        s.declined, service.loaded.version, centred,
    )  # fmt: skip
    assert not verify(service.public_key, s.signature, tampered)
    for lie in (
        replace(centred, similarity=0.99),
        replace(centred, offset_loglik=-7.0),
        replace(centred, centroid_sha256="0" * 64),
        replace(centred, words_loglik=-1.0),
        replace(centred, offset_words=-0.5),
        replace(centred, words_sha256="0" * 64),
    ):
        statement = score_bytes(service.node_id, "req-1", prompt, s.loglik, s.bits_per_byte,
                                s.confidence, s.declined, service.loaded.version, lie)  # fmt: skip
        assert not verify(service.public_key, s.signature, statement)
    assert not s.declined and s.loglik < 0
    assert service.centroid is not None and -1 < s.similarity < 1 and s.offset_loglik < 0
    assert service.words is not None and s.words_loglik == service.words.loglik(prompt) < 0
    assert s.offset_words < 0


def test_a_prompt_like_the_nodes_text_is_nearer_its_centroid(service: NodeService, trained) -> None:
    own = service.score("r", trained["medicine"].held_out[:300])
    foreign = service.score("r", trained["law"].held_out[:300])
    assert own.similarity > foreign.similarity
    assert own.offset_loglik == foreign.offset_loglik  # the model's, whatever the prompt


def test_a_prompt_of_the_nodes_words_is_likelier_under_its_counts_than_another_nodes(
    service: NodeService, trained
) -> None:
    law = read_words(trained["law"].folder / "words.json")
    assert service.words is not None and law is not None
    for own, other, prompt in ((service.words, law, trained["medicine"].held_out[:300]),
                               (law, service.words, trained["law"].held_out[:300])):  # fmt: skip
        assert own.loglik(prompt) > other.loglik(prompt)
    assert service.score("r", trained["medicine"].held_out[:300]).words_loglik == (
        service.words.loglik(trained["medicine"].held_out[:300])
    )


def test_the_auditor_gets_the_word_counts_the_node_signs_under(service: NodeService) -> None:
    assert service.words is not None
    parts = list(service.model_files("", service.words_sha256))
    assert [name for name, _, _ in parts] == ["words.json"] and parts[-1][2]
    sent = b"".join(data for _, data, _ in parts)
    assert hashlib.sha256(sent).hexdigest() == service.words_sha256
    with pytest.raises(SLMError, match="word counts"):
        list(service.model_files("", "0" * 64))


def test_a_node_declines_prompts_below_its_min_confidence(trained) -> None:
    strict = NodeService(trained["medicine"].load(), generate_key(), min_confidence=0.1)
    foreign = strict.score("r", trained["law"].held_out[:300])
    own = strict.score("r", trained["medicine"].held_out[:300])
    assert foreign.declined and not own.declined
    with pytest.raises(SLMError, match="min-confidence"):
        NodeService(trained["medicine"].load(), generate_key(), min_confidence=2.0)


def test_completions_stream_and_end_with_a_verifiable_signature(service: NodeService) -> None:
    params = SamplingParams(max_tokens=30, temperature=0)
    chunks = list(service.generate("req-2", "Acute serous otitis media", params))
    assert chunks[-1].done and all(not c.done for c in chunks[:-1])
    completion = "".join(c.text for c in chunks)
    assert completion and chunks[-1].tokens > 0
    statement = completion_bytes(
        service.node_id, "req-2", "Acute serous otitis media", completion, chunks[-1].tokens,
        service.loaded.version,
    )  # fmt: skip
    assert verify(service.public_key, chunks[-1].signature, statement)
    forged = completion_bytes(
        service.node_id, "req-2", "Acute serous otitis media", completion + "!",
        chunks[-1].tokens, service.loaded.version,
    )  # fmt: skip
    assert not verify(service.public_key, chunks[-1].signature, forged)
