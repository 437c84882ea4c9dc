"""The hub's TLS material: a self-signed CA and a server certificate it signs.

One certificate serves every plane (the routing gRPC server now, the Flower SuperLink later).
Nodes trust the hub by its CA file (`slm-node join --ca ca.pem`), so the hub can add host
names later by reissuing the server certificate without touching the nodes. Keys are ECDSA
P-384, like the nodes' identity keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slm.atomic import atomic_write_bytes
from slm.errors import SLMError
from slm.files import HomeFile

LOOPBACK_NAMES = ("localhost",)
CA_YEARS, SERVER_YEARS = 10, 2


@dataclass(frozen=True)
class TLSFiles:
    """The hub's TLS material in its home: nodes and clients get ca.pem, the rest stays."""

    home: Path
    ca_cert = HomeFile("ca.pem")
    ca_key = HomeFile("ca.key")
    server_cert = HomeFile("server.pem")
    server_key = HomeFile("server.key")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: the only hosts `--insecure` may serve on."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    atomic_write_bytes(path, pem, mode=0o600)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise SLMError(f"invalid host name {host!r} for the server certificate") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_tls(files: TLSFiles, hosts: list[str]) -> None:
    """Make the CA (if missing) and a server certificate for localhost, loopback and `hosts`."""
    now = dt.datetime.now(dt.UTC)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"SwarmLLM hub CA {socket.gethostname()}")]
        )
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA384())
        )
        _write_key(files.ca_key, ca_key)
        atomic_write_bytes(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SwarmLLM hub")]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * SERVER_YEARS))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_key(files.server_key, server_key)
    atomic_write_bytes(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))


def certificate_hosts(path: Path) -> list[str]:
    """The names and addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]
