"""The hub's CA and server certificate work in a real TLS handshake, for the right names only."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from hub.tls import TLSFiles, certificate_hosts, create_tls, is_loopback


def _handshake(files: TLSFiles, server_name: str) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"x")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_the_server_certificate_is_trusted_for_its_names_only(tmp_path: Path) -> None:
    files = TLSFiles(tmp_path)
    create_tls(files, ["hub.example.org"])
    assert {"localhost", "127.0.0.1", "::1", "hub.example.org"} <= set(
        certificate_hosts(files.server_cert)
    )
    for name in ("localhost", "127.0.0.1", "hub.example.org"):
        _handshake(files, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, "evil.example.org")


def test_reissuing_keeps_the_ca(tmp_path: Path) -> None:
    files = TLSFiles(tmp_path)
    create_tls(files, [])
    ca = files.ca_cert.read_bytes()
    create_tls(files, ["10.0.0.7"])
    assert files.ca_cert.read_bytes() == ca
    assert "10.0.0.7" in certificate_hosts(files.server_cert)
    _handshake(files, "localhost")
    assert oct(files.server_key.stat().st_mode)[-3:] == "600"


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("::1", True), ("127.3.4.5", True),
    ("0.0.0.0", False), ("10.0.0.1", False), ("hub.example.org", False),
])  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
