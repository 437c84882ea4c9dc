"""The bytes that nodes sign and the hub verifies: defined once, here, for both sides.

Protobuf serialisation is not canonical, so signatures never cover encoded messages. Each
signed statement is a fixed tag followed by canonical JSON (sorted keys, no spaces, floats as
Python's shortest round-trip repr), which any implementation can reproduce exactly. Node keys
are ECDSA P-384 in OpenSSH format; signatures are DER ECDSA over SHA-384.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

CHALLENGE_TAG = b"swarmllm/join-challenge/1\n"
SCORE_TAG = b"swarmllm/score/1\n"
COMPLETION_TAG = b"swarmllm/completion/1\n"


def node_id(public_key_openssh: str | bytes) -> str:
    """sha256 of the OpenSSH public key blob, first 32 hex digits (128 bits)."""
    line = (
        public_key_openssh.decode() if isinstance(public_key_openssh, bytes) else public_key_openssh
    )
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    return hashlib.sha256(base64.b64decode(parts[1])).hexdigest()[:32]


def _statement(tag: bytes, facts: dict[str, Any]) -> bytes:
    return tag + json.dumps(facts, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def challenge_bytes(nonce: bytes, public_key_openssh: str) -> bytes:
    """What a joining node signs: the hub's one-time nonce bound to the node's own key."""
    return _statement(CHALLENGE_TAG, {"nonce": nonce.hex(), "node_id": node_id(public_key_openssh)})


def score_bytes(
    node: str, request_id: str, prompt: str, loglik: float, bits_per_byte: float,
    confidence: float, declined: bool, model_version: str,
) -> bytes:  # fmt: skip
    """What a node signs when it scores a prompt (the prompt enters as its sha256)."""
    return _statement(
        SCORE_TAG,
        {
            "node_id": node, "request_id": request_id, "prompt_sha256": sha256_text(prompt),
            "loglik": float(loglik), "bits_per_byte": float(bits_per_byte),
            "confidence": float(confidence), "declined": bool(declined),
            "model_version": model_version,
        },
    )  # fmt: skip


def completion_bytes(
    node: str, request_id: str, prompt: str, completion: str, tokens: int, model_version: str
) -> bytes:
    """What a node signs when it finishes a completion: prompt and text enter as sha256."""
    return _statement(
        COMPLETION_TAG,
        {
            "node_id": node, "request_id": request_id, "prompt_sha256": sha256_text(prompt),
            "completion_sha256": sha256_text(completion), "tokens": int(tokens),
            "model_version": model_version,
        },
    )  # fmt: skip


def sign(key: ec.EllipticCurvePrivateKey, statement: bytes) -> bytes:
    return key.sign(statement, ec.ECDSA(hashes.SHA384()))


@functools.lru_cache(maxsize=16_384)
def _public_key(public_key_openssh: str) -> ec.EllipticCurvePublicKey | None:
    """Parsed once per key: the hub verifies every score and answer of the same few nodes."""
    try:
        key = serialization.load_ssh_public_key(public_key_openssh.encode())
    except (ValueError, UnicodeError, UnsupportedAlgorithm):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return None
    return key


def verify(public_key_openssh: str, signature: bytes, statement: bytes) -> bool:
    """True only for a valid P-384 signature by this key; any malformed input is False."""
    key = _public_key(public_key_openssh)
    if key is None:
        return False
    try:
        key.verify(signature, statement, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        return False
    return True
