"""Admission's checks on a hello and a proof, before any database work."""

from __future__ import annotations

import numpy as np
import pytest

from hub.routing.admission import AdmissionError, check_hello, check_proof
from node.identity import generate_key, public_openssh
from protos import swarm_pb2 as pb
from protos.signing import challenge_bytes, sign
from protos.wire import CENTROID_DIM
from slm.profile import PROFILE_DIM

KEY = generate_key()
UNIT = [1.0] + [0.0] * (PROFILE_DIM - 1)


def _hello(**changes) -> pb.Hello:  # type: ignore[no-untyped-def]
    fields = {"public_key": public_openssh(KEY).decode(), "domain": "law", "profile": UNIT,
              "model_version": "0123456789abcdef", "capacity": 2}  # fmt: skip
    return pb.Hello(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"public_key": "ssh-foo AAAAB3NzaC1yc2E="}, "not an OpenSSH public key"),
        ({"public_key": "garbage"}, "not an OpenSSH public key"),
        ({"domain": "Law!"}, "hello.domain"),
        ({"profile": [0.5] * 10}, "finite floats"),
        ({"profile": [2.0] + [0.0] * (PROFILE_DIM - 1)}, "unit length"),
        ({"profile": [float("nan")] * PROFILE_DIM}, "finite floats"),
        ({"capacity": 0}, "capacity"),
        ({"model_version": ""}, "model_version"),
        ({"role": "boss"}, "hello.role"),
        ({"base": "b179c9"}, "hello.base"),
        ({"centroid": [1.0] + [0.0] * 10}, "hello.centroid"),
        ({"centroid": [2.0] + [0.0] * (CENTROID_DIM - 1)}, "hello.centroid"),
        ({"centroid": [float("nan")] * CENTROID_DIM}, "hello.centroid"),
        ({"words_sha256": "../../etc/passwd"}, "hello.words_sha256"),
        ({"words_sha256": "A" * 64}, "hello.words_sha256"),
    ],
)
def test_a_malformed_hello_is_invalid_argument(changes, words) -> None:
    with pytest.raises(AdmissionError) as refused:
        check_hello(_hello(**changes))
    assert refused.value.status == "INVALID_ARGUMENT" and words in str(refused.value)


def test_only_this_keys_signature_of_this_nonce_proves_the_node() -> None:
    applicant = check_hello(_hello())
    assert np.isclose(np.linalg.norm(applicant.profile), 1.0)
    nonce, other = b"\x01" * 32, b"\x02" * 32
    check_proof(applicant, nonce, sign(KEY, challenge_bytes(nonce, applicant.public_key)))
    for signature in (
        sign(KEY, challenge_bytes(other, applicant.public_key)),  # replayed from another stream
        sign(generate_key(), challenge_bytes(nonce, applicant.public_key)),  # forged
        b"",
    ):
        with pytest.raises(AdmissionError) as refused:
            check_proof(applicant, nonce, signature)
        assert refused.value.status == "UNAUTHENTICATED"


def test_a_generalist_never_refines_and_a_centroid_is_kept_as_sent() -> None:
    centroid = [0.6, 0.8] + [0.0] * (CENTROID_DIM - 2)
    applicant = check_hello(_hello(role="generalist", refines=True, centroid=centroid))
    assert applicant.role == "generalist" and not applicant.refines
    assert applicant.centroid == tuple(np.float32(x) for x in centroid)
    assert check_hello(_hello()).role == "domain" and check_hello(_hello()).centroid == ()
