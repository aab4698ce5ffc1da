"""A client of a plain-HTTP server builds no TLS context up front, yet https is verified."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstack.api import Client
from dstack.errors import ServerError

from .conftest import LiveServer


def test_plain_http_server_is_reachable(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as client:
        assert client.list_runs() == []


@pytest.fixture
def self_signed_https(tmp_path: Path) -> Iterator[str]:
    """An https listener with a certificate no CA signed; it completes handshakes only."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(timeout=5)


def test_https_urls_are_still_verified(live_server: LiveServer, self_signed_https: str) -> None:
    with (
        Client(live_server.url, live_server.token) as client,
        pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.request("GET", f"{self_signed_https}/api/health")


def test_an_https_server_with_an_unknown_certificate_is_refused(self_signed_https: str) -> None:
    with (
        Client(self_signed_https, "token") as client,
        pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.health()
