"""`PlainHTTPTransport` (the CLI's transport to its local server) against a real server:
answers, errors, kept-alive connections, a connection the server closed, timeouts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dstack.api import Client
from dstack.api.plainhttp import PlainHTTPTransport
from dstack.errors import NotFoundError, ServerUnreachableError
from dstack.models.digests import digest_bytes

from .conftest import LiveServer


def test_requests_answers_and_errors_go_as_with_httpx_own(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token, transport=PlainHTTPTransport()) as client:
        assert "version" in client.health()
        assert client.list_runs(all=True) == []  # a query string
        with pytest.raises(NotFoundError, match="nope"):
            client.get_run("nope")
        digest = digest_bytes(b"x" * 300_000)
        assert client.missing_blobs([digest]) == [digest]  # a JSON body


def test_a_streamed_body_goes_chunked(live_server: LiveServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    digest = digest_bytes(data)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with Client(live_server.url, live_server.token, transport=PlainHTTPTransport()) as client:
        client.put_blob(path, digest, progress=lambda _: None)
        assert client.missing_blobs([digest]) == []
        client.get_blob(digest, path.with_name("back"))
    assert path.with_name("back").read_bytes() == data


class _Counting:
    """A plain-HTTP server that answers `200 ok` and keeps count of its connections; with
    `close_idle`, it closes each connection after its first answer without saying so."""

    def __init__(self, *, close_idle: bool = False, delay: float = 0.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.close_idle = close_idle
        self.delay = delay
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                _, buffered = buffered.split(b"\r\n\r\n", 1)
                if self.delay:
                    threading.Event().wait(self.delay)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if self.close_idle:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def counting() -> Iterator[_Counting]:
    server = _Counting()
    yield server
    server.close()


def test_one_connection_carries_one_request_after_another(counting: _Counting) -> None:
    with httpx.Client(transport=PlainHTTPTransport()) as client:
        assert [client.get(f"{counting.url}/{i}").text for i in range(3)] == ["ok"] * 3
    assert counting.connections == 1


def test_a_connection_the_server_closed_is_not_reused() -> None:
    server = _Counting(close_idle=True)
    try:
        with httpx.Client(transport=PlainHTTPTransport()) as client:
            assert [client.get(server.url).text for _ in range(3)] == ["ok"] * 3
        assert server.connections == 3
    finally:
        server.close()


def test_no_server_is_unreachable_and_a_slow_one_times_out() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with (
        Client(f"http://127.0.0.1:{port}", "t", transport=PlainHTTPTransport()) as client,
        pytest.raises(ServerUnreachableError, match="cannot reach"),
    ):
        client.health()
    slow = _Counting(delay=2.0)
    try:
        with (
            httpx.Client(transport=PlainHTTPTransport(), timeout=0.2) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.get(slow.url)
    finally:
        slow.close()


def test_https_is_not_its_business() -> None:
    with (
        httpx.Client(transport=PlainHTTPTransport()) as client,
        pytest.raises(httpx.UnsupportedProtocol),
    ):
        client.get("https://127.0.0.1:1/")
