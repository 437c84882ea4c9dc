"""Dialling a hub: TLS against the hub's own CA by default, plaintext only when asked.

Both sides of the wire use these settings (nodes on NodeLink, clients on Swarm), so keepalive
pings and message limits match what the hub's server accepts.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from protos.errors import WireError

KEEPALIVE = [  # both ends ping an idle connection, so a dead peer is noticed in ~30 s
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
SERVER_OPTIONS = [
    *KEEPALIVE,
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),  # accept the clients' pings
    ("grpc.so_reuseport", 0),  # a second hub on the same port fails instead of sharing it
]


def check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WireError(f"hub address {address!r} must be HOST:PORT, e.g. 127.0.0.1:7443")
    return address


def credentials(ca: Path | None, insecure: bool) -> grpc.ChannelCredentials | None:
    """None for plaintext; else TLS trusting `ca` (the hub's ca.pem)."""
    if insecure:
        return None
    if ca is None:
        raise WireError(
            "give the hub's CA certificate with --ca CA.pem (or --insecure on loopback)"
        )
    try:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    except FileNotFoundError:
        raise WireError(f"no CA certificate at {ca}; copy the hub's ca.pem here") from None


def aio_channel(address: str, ca: Path | None, insecure: bool) -> grpc.aio.Channel:
    check_address(address)
    creds = credentials(ca, insecure)
    if creds is None:
        return grpc.aio.insecure_channel(address, options=KEEPALIVE)
    return grpc.aio.secure_channel(address, creds, options=KEEPALIVE)


def channel(address: str, ca: Path | None, insecure: bool) -> grpc.Channel:
    check_address(address)
    creds = credentials(ca, insecure)
    if creds is None:
        return grpc.insecure_channel(address, options=KEEPALIVE)
    return grpc.secure_channel(address, creds, options=KEEPALIVE)
