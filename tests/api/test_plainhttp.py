"""`PLAIN_HTTP` (`api.plainhttp`, the CLI's transport to its local server) against a real
server: answers, errors, kept-alive connections, a connection the server closed, timeouts,
and requests encoded as httpx encodes them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstack.api import Client
from dstack.api.plainhttp import PlainSession
from dstack.api.transport import PLAIN_HTTP, Transport
from dstack.errors import NotFoundError, ServerUnreachableError
from dstack.models.digests import digest_bytes

from .conftest import LiveServer


def test_requests_answers_and_errors_go_as_with_httpx_own(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token, transport=PLAIN_HTTP) as client:
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
    with Client(live_server.url, live_server.token, transport=PLAIN_HTTP) as client:
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
    session = PlainSession(counting.url, 5.0)
    try:
        assert [session.request("GET", f"/{i}").text for i in range(3)] == ["ok"] * 3
    finally:
        session.close()
    assert counting.connections == 1


def test_a_connection_the_server_closed_is_not_reused() -> None:
    server = _Counting(close_idle=True)
    session = PlainSession(server.url, 5.0)
    try:
        assert [session.request("GET", "/").text for _ in range(3)] == ["ok"] * 3
        assert server.connections == 3
    finally:
        session.close()
        server.close()


def test_no_server_is_unreachable_and_a_slow_one_times_out() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with (
        Client(f"http://127.0.0.1:{port}", "t", transport=PLAIN_HTTP) as client,
        pytest.raises(ServerUnreachableError, match="cannot reach"),
    ):
        client.health()
    slow = _Counting(delay=2.0)
    try:
        with (
            Transport(slow.url, "t", timeout=0.2, transport=PLAIN_HTTP) as session,
            pytest.raises(ServerUnreachableError, match="did not answer in time"),
        ):
            session.request("GET", "/")
    finally:
        slow.close()


def test_https_is_not_its_business() -> None:
    with pytest.raises(ValueError, match="plain HTTP only"):
        PlainSession("https://127.0.0.1:1", 5.0)


class _Recording:
    """A plain-HTTP server that answers `200 {}` and keeps each request's head and body."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                line, *fields = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                body = self._body(conn, headers, body)
                self.requests.append((line, headers, body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    @staticmethod
    def _body(conn: socket.socket, headers: dict[str, str], body: bytes) -> bytes:
        if "content-length" in headers:
            while len(body) < int(headers["content-length"]):
                body += conn.recv(65536)
            return body
        if headers.get("transfer-encoding") == "chunked":
            while not body.endswith(b"0\r\n\r\n"):
                body += conn.recv(65536)
            decoded, rest = b"", body
            while True:
                size, _, rest = rest.partition(b"\r\n")
                if int(size, 16) == 0:
                    return decoded
                decoded, rest = decoded + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        return body

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": {"all": True, "repo_id": "a b/ü", "limit": 5, "cursor": None, "n": [1, 2]}},
        {"json": {"name": "ü", "values": [1.5, None, True], "nested": {"a": "\n"}}},
        {"content": b"\x00\x01 raw bytes", "headers": {"content-type": "application/octet-stream"}},
        {"content": iter([b"streamed ", b"in chunks"])},
    ],
    ids=["query", "json", "bytes", "chunks"],
)
def test_requests_are_encoded_as_httpx_encodes_them(kwargs: dict[str, object]) -> None:
    # The server sees the same request line, body and content headers from either.
    server = _Recording()
    try:
        for transport in (None, PLAIN_HTTP):
            sent = dict(kwargs)
            if "content" in sent and not isinstance(sent["content"], bytes):
                sent["content"] = iter([b"streamed ", b"in chunks"])
            with Transport(server.url, "t", transport=transport) as session:
                assert session.request("POST", "/api/x", **sent).json() == {}  # type: ignore[arg-type]
        (httpx_line, httpx_head, httpx_body), (plain_line, plain_head, plain_body) = server.requests
    finally:
        server.close()

    assert plain_line == httpx_line
    assert plain_body == httpx_body
    for name in ("content-type", "content-length", "transfer-encoding", "authorization"):
        assert plain_head.get(name) == httpx_head.get(name), name


def test_a_failure_of_whoever_reads_a_streamed_answer_stays_theirs(counting: _Counting) -> None:
    # A full disk while a download is written is not "the server is unreachable".

    def write_to_a_full_disk(session: Transport) -> None:
        with session.stream("GET", "/") as answer:
            for _ in answer.iter_bytes():
                raise OSError(28, "No space left on device")

    with Transport(counting.url, "t", transport=PLAIN_HTTP) as session:
        with pytest.raises(OSError, match="No space left"):
            write_to_a_full_disk(session)
        assert session.request("GET", "/").text == "ok"  # the session is still usable
