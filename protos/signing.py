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
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

CHALLENGE_TAG = b"swarmllm/join-challenge/1\n"
SCORE_TAG = b"swarmllm/score/3\n"  # 2: the similarity is signed too; 3: the word counts
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


@dataclass(frozen=True)
class Centred:
    """What a score says beside its loglik, signed with it: the prompt's similarity to the
    node's centroid (by its digest, `centroid_sha256`), its words' loglik under the node's word
    counts (by their digest, `words_sha256`), and the node's offsets."""

    similarity: float = 0.0
    offset_loglik: float = 0.0  # nats per byte on the calibration pool
    offset_similarity: float = 0.0
    centroid_sha256: str = ""  # of the centroid the node sent in its Hello ("" if none)
    words_loglik: float = 0.0  # nats
    offset_words: float = 0.0  # nats per byte on the calibration pool
    words_sha256: str = ""  # of the word counts the node committed to in its Hello ("" if none)


def centroid_sha256(centroid: Sequence[float]) -> str:
    """The digest of a centroid as the wire carries it (float32, little-endian); "" if none."""
    if not len(centroid):
        return ""
    return hashlib.sha256(struct.pack(f"<{len(centroid)}f", *centroid)).hexdigest()


def score_bytes(
    node: str, request_id: str, prompt: str, loglik: float, bits_per_byte: float,
    confidence: float, declined: bool, model_version: str, centred: Centred = Centred(),
) -> bytes:  # fmt: skip
    """What a node signs when it scores a prompt (the prompt enters as its sha256)."""
    return _statement(
        SCORE_TAG,
        {
            "node_id": node, "request_id": request_id, "prompt_sha256": sha256_text(prompt),
            "loglik": float(loglik), "bits_per_byte": float(bits_per_byte),
            "confidence": float(confidence), "declined": bool(declined),
            "model_version": model_version, "similarity": float(centred.similarity),
            "offset_loglik": float(centred.offset_loglik),
            "offset_similarity": float(centred.offset_similarity),
            "centroid_sha256": centred.centroid_sha256,
            "words_loglik": float(centred.words_loglik),
            "offset_words": float(centred.offset_words), "words_sha256": centred.words_sha256,
        },
    )  # fmt: skip


def generation_input(prompt: str, draft: str = "", answer_so_far: str = "") -> str:
    """What a completion is signed as the answer to: the prompt and the answer so far (as
    before refinement existed), or for a refinement the prompt, its draft and the answer so
    far, as canonical JSON (no concatenation can make one input pass for another)."""
    if not draft:
        return prompt + answer_so_far
    return json.dumps({"prompt": prompt, "draft": draft, "answer_so_far": answer_so_far},
                      sort_keys=True, separators=(",", ":"))  # fmt: skip


def completion_bytes(
    node: str, request_id: str, prompt: str, completion: str, tokens: int, model_version: str
) -> bytes:
    """What a node signs when it finishes a completion: prompt (its `generation_input`) and
    text enter as sha256."""
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
