"""The node's identity: an ECDSA P-384 key in OpenSSH format (id: protos.signing.node_id).

OpenSSH format because Flower's SuperNode authentication takes exactly that kind of key, so one
key proves the node on both the routing and the training plane.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from slm.atomic import atomic_write_bytes
from slm.files import read_key


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def public_openssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


def write_key(private_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write the private key (mode 0600) and `<name>.pub` beside it, each atomically."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    atomic_write_bytes(private_path, pem, mode=0o600)
    atomic_write_bytes(private_path.with_suffix(".pub"), public_openssh(key) + b"\n")


def load_key(private_path: Path) -> ec.EllipticCurvePrivateKey:
    return read_key(
        private_path, lambda data: serialization.load_ssh_private_key(data, password=None),
        lambda key: isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1",
        "node key", "an ECDSA P-384 OpenSSH private key", "run `slm-node init` first",
    )  # fmt: skip
