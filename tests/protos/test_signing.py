"""Canonical signed statements: stable bytes, and signatures that fail on any change."""

import pytest

from node.identity import generate_key, public_openssh
from protos.signing import (
    challenge_bytes,
    completion_bytes,
    node_id,
    score_bytes,
    sign,
    verify,
)


@pytest.fixture(scope="module")
def key():
    return generate_key()


def test_node_id_is_stable_and_derived_from_the_key(key) -> None:
    public = public_openssh(key).decode()
    assert node_id(public) == node_id(public.encode()) and len(node_id(public)) == 32
    assert node_id(public) != node_id(public_openssh(generate_key()).decode())
    with pytest.raises(ValueError):
        node_id("not-a-key")


def test_statements_are_canonical() -> None:
    a = score_bytes("n", "r", "prompt", -1.5, 0.25, 0.5, False, "v1")
    b = score_bytes("n", "r", "prompt", -1.5, 0.25, 0.5, False, "v1")
    assert a == b
    assert a.startswith(b"swarmllm/score/3\n")
    assert b'"loglik":-1.5' in a and b"prompt" not in a.split(b"\n", 1)[1].replace(
        b"prompt_sha256", b""
    )


def test_a_signature_verifies_only_for_the_same_statement_and_key(key) -> None:
    public = public_openssh(key).decode()
    statement = completion_bytes(node_id(public), "r1", "Q", "the answer", 3, "v1")
    signature = sign(key, statement)
    assert verify(public, signature, statement)
    forged = completion_bytes(node_id(public), "r1", "Q", "another answer", 3, "v1")
    assert not verify(public, signature, forged)
    other = public_openssh(generate_key()).decode()
    assert not verify(other, signature, statement)
    assert not verify(public, b"garbage", statement)
    assert not verify("ssh-ed25519 AAAA", signature, statement)


def test_a_challenge_is_bound_to_the_nonce_and_the_key(key) -> None:
    public = public_openssh(key).decode()
    signature = sign(key, challenge_bytes(b"\x01" * 32, public))
    assert verify(public, signature, challenge_bytes(b"\x01" * 32, public))
    assert not verify(public, signature, challenge_bytes(b"\x02" * 32, public))
