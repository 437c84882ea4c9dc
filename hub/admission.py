"""Who may serve this hub: a node proves its key by signing a fresh nonce, and a key the hub
does not know yet (or a known key moving to another domain) needs a join token.

Plain functions over the registry and the token table; the routing server only carries the
messages. The proof is checked before the token is redeemed, so a forged proof cannot burn a
token, and the nonce is new for every stream, so a proof captured from one stream is worthless
on the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

from hub.errors import StatusError
from hub.registry import NodeRecord, NodeRegistry
from hub.tokens import check_domain, redeem_token
from protos import swarm_pb2 as pb
from protos.signing import challenge_bytes, node_id, verify
from slm.errors import SLMError
from slm.profile import PROFILE_DIM

MAX_CAPACITY = 256


class AdmissionError(StatusError):
    """The node is refused; the stream is closed with this status."""


@dataclass(frozen=True)
class Applicant:
    node_id: str
    public_key: str
    domain: str
    profile: np.ndarray
    model_version: str
    capacity: int
    preset: str
    join_token: str


def check_hello(hello: pb.Hello) -> Applicant:
    """The node's claims, checked for shape before any signature or database work."""
    try:
        key = serialization.load_ssh_public_key(hello.public_key.encode())
    except (ValueError, UnicodeError, UnsupportedAlgorithm):
        raise AdmissionError(
            "INVALID_ARGUMENT", "hello.public_key is not an OpenSSH public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AdmissionError("INVALID_ARGUMENT", "hello.public_key must be an ECDSA P-384 key")
    try:
        check_domain(hello.domain)
    except SLMError as exc:
        raise AdmissionError("INVALID_ARGUMENT", f"hello.domain: {exc}") from None
    profile = np.asarray(hello.profile, dtype=np.float32)
    if profile.shape != (PROFILE_DIM,) or not np.all(np.isfinite(profile)):
        raise AdmissionError(
            "INVALID_ARGUMENT", f"hello.profile must be {PROFILE_DIM} finite floats"
        )
    if not math.isclose(float(np.linalg.norm(profile)), 1.0, rel_tol=1e-3):
        raise AdmissionError("INVALID_ARGUMENT", "hello.profile must have unit length")
    if not 1 <= hello.capacity <= MAX_CAPACITY:
        raise AdmissionError(
            "INVALID_ARGUMENT", f"hello.capacity must be 1..{MAX_CAPACITY}, got {hello.capacity}"
        )
    if not hello.model_version or len(hello.model_version) > 64:
        raise AdmissionError("INVALID_ARGUMENT", "hello.model_version must be 1-64 characters")
    return Applicant(
        node_id(hello.public_key), hello.public_key, hello.domain, profile, hello.model_version,
        hello.capacity, hello.preset[:64], hello.join_token,
    )  # fmt: skip


def check_proof(applicant: Applicant, nonce: bytes, signature: bytes) -> None:
    if not verify(applicant.public_key, signature, challenge_bytes(nonce, applicant.public_key)):
        raise AdmissionError(
            "UNAUTHENTICATED",
            "the proof is not this key's signature of this stream's challenge "
            "(forged, or replayed from another connection)",
        )


def admit(engine: Engine, registry: NodeRegistry, applicant: Applicant, address: str) -> NodeRecord:
    """Register the proven node, redeeming its join token when the hub needs one; a refusal
    is an AdmissionError or the token's own TokenError, each with its status."""
    known = registry.get(applicant.node_id)
    if known is not None and known.revoked:
        raise AdmissionError(
            "PERMISSION_DENIED", f"node {applicant.node_id} was revoked by the hub operator"
        )
    if known is None or known.domain != applicant.domain:
        if not applicant.join_token:
            what = (
                "this node's key is unknown to the hub"
                if known is None
                else f"this node was admitted for {known.domain!r}, not {applicant.domain!r}"
            )
            raise AdmissionError(
                "UNAUTHENTICATED",
                f"{what}; join with a token from `slm-hub token create --domain "
                f"{applicant.domain}`",
            )
        redeem_token(engine, applicant.join_token, applicant.domain, applicant.node_id)
    return registry.admit(
        applicant.node_id, applicant.public_key, applicant.domain, applicant.preset, address,
        applicant.model_version, applicant.capacity,
    )  # fmt: skip
