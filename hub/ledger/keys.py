"""The hub's ledger signing key (Ed25519): signs every ledger entry and the chain head.

Ed25519 rather than the nodes' P-384 because the ledger signs thousands of entries per second
and `verify` checks every one: Ed25519 signs in ~50 µs and verifies in ~120 µs here.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from slm.atomic import atomic_write_bytes
from slm.files import read_key


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    atomic_write_bytes(path, pem, mode=0o600)
    write_public_key(path, key)
    return key


def write_public_key(private_path: Path, key: Ed25519PrivateKey) -> None:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(private_path.with_suffix(".pub"), public)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    return read_key(
        path, lambda data: serialization.load_pem_private_key(data, password=None),
        lambda key: isinstance(key, Ed25519PrivateKey), "hub signing key",
        "an Ed25519 PEM private key",
        "run `slm-hub init` first",
    )  # fmt: skip


def load_public_key(path: Path) -> Ed25519PublicKey:
    return read_key(
        path, serialization.load_pem_public_key, lambda key: isinstance(key, Ed25519PublicKey),
        "hub public key", "an Ed25519 PEM public key", "run `slm-hub init` first",
    )  # fmt: skip
