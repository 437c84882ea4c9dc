"""Who may serve this hub: a node proves its key by signing a fresh nonce, and a key the hub
does not know yet (or a known key moving to another domain) needs a join token.

`Handshake` runs the start of a node's stream (hello, challenge, proof, admission) over plain
functions of the registry and the token table; the routing server only carries its messages.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

from hub.errors import StatusError
from hub.routing.tokens import check_domain, redeem_token
from hub.storage.registry import NodeRecord, NodeRegistry
from protos import swarm_pb2 as pb
from protos.signing import challenge_bytes, node_id, verify
from protos.wire import CENTROID_DIM, MAX_PRESET_CHARS, MAX_VERSION_CHARS
from slm.errors import SLMError
from slm.profile import PROFILE_DIM

MAX_CAPACITY = 256
ROLES = ("domain", "generalist")  # a Hello's role; empty means "domain"
HELLO_TIMEOUT_S = 10.0  # for each of the hello and the proof


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
    role: str = "domain"
    base: str = ""  # sha256 of the base its model adapts; "": trained from scratch
    refines: bool = False
    centroid: tuple[float, ...] = ()  # its sentence-vector centroid; (): none
    words_sha256: str = ""  # of the word counts its words claims are under; "": none


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
    if not 0 < len(hello.model_version) <= MAX_VERSION_CHARS:
        raise AdmissionError(
            "INVALID_ARGUMENT", f"hello.model_version must be 1-{MAX_VERSION_CHARS} characters"
        )
    role = hello.role or "domain"
    if role not in ROLES:
        raise AdmissionError(
            "INVALID_ARGUMENT", f"hello.role must be one of {', '.join(ROLES)}, got {role[:32]!r}"
        )
    if hello.base and not re.fullmatch(r"[0-9a-f]{64}", hello.base):
        raise AdmissionError("INVALID_ARGUMENT", "hello.base must be 64 hex digits (a sha256)")
    centroid = np.asarray(hello.centroid, dtype=np.float32)
    if len(centroid) and (
        centroid.shape != (CENTROID_DIM,)
        or not np.all(np.isfinite(centroid))
        or not math.isclose(float(np.linalg.norm(centroid)), 1.0, rel_tol=1e-3)
    ):
        raise AdmissionError("INVALID_ARGUMENT", f"hello.centroid must be empty or {CENTROID_DIM} "
                             "finite floats of unit length")  # fmt: skip
    if hello.words_sha256 and not re.fullmatch(r"[0-9a-f]{64}", hello.words_sha256):
        raise AdmissionError("INVALID_ARGUMENT", "hello.words_sha256 must be empty or 64 hex "
                             "digits (a sha256)")  # fmt: skip
    return Applicant(
        node_id(hello.public_key), hello.public_key, hello.domain, profile, hello.model_version,
        hello.capacity, hello.preset[:MAX_PRESET_CHARS], hello.join_token, role, hello.base,
        hello.refines and role == "domain", tuple(hello.centroid), hello.words_sha256,
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
        applicant.model_version, applicant.capacity, applicant.role, applicant.base,
    )  # fmt: skip


class Handshake:
    """The start of one node's stream: hello -> challenge -> proof -> admitted.

    The nonce is new for every stream, so a proof captured from one is worthless on the next,
    and the proof is checked before `admit` touches a token, so a forged one cannot burn it.
    Every refusal is an AdmissionError (or the token's TokenError) with its status.
    """

    def __init__(self, messages: AsyncIterator[pb.NodeMessage]) -> None:
        self.messages = messages
        self.nonce = secrets.token_bytes(32)
        self.applicant: Applicant | None = None

    async def challenge(self) -> pb.HubMessage:
        """Read and check the hello; the challenge to send back."""
        self.applicant = check_hello(await self._expect("hello"))
        return pb.HubMessage(challenge=pb.Challenge(nonce=self.nonce))

    async def admit(self, admit: Callable[[Applicant], NodeRecord]) -> tuple[Applicant, NodeRecord]:
        """Read and check the proof, then `admit` the node (blocking, so in a worker thread)."""
        assert self.applicant is not None, "challenge() first"
        check_proof(self.applicant, self.nonce, (await self._expect("proof")).signature)
        return self.applicant, await asyncio.to_thread(admit, self.applicant)

    async def _expect(self, kind: str):  # type: ignore[no-untyped-def]
        try:
            message = await asyncio.wait_for(self.messages.__anext__(), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise AdmissionError(
                "DEADLINE_EXCEEDED", f"no {kind} within {HELLO_TIMEOUT_S:.0f} s"
            ) from None
        except StopAsyncIteration:
            raise AdmissionError(
                "CANCELLED", f"the node closed the stream before its {kind}"
            ) from None
        if message.WhichOneof("body") != kind:
            raise AdmissionError(
                "INVALID_ARGUMENT", f"expected {kind}, got {message.WhichOneof('body')}"
            )
        return getattr(message, kind)
