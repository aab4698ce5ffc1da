"""`PlainHTTPTransport`: httpx's requests over the standard library's `http.client`.

For a server on plain HTTP that one command talks to briefly (the CLI and its local server):
httpx's own transport imports httpcore and h11, about 17 ms of every command's start, for
what `http.client` (which httpx imports anyway) does as well here. Connections are kept
alive and reused, one request at a time on each; failures are httpx's exceptions, so
`api.transport.Transport` treats them as it treats httpcore's.
"""

from __future__ import annotations

import functools
import http.client
import select
import threading
from collections.abc import Callable, Iterator

import httpx

_CHUNK = 64 * 1024
# What a connection kept alive shows when the server closed it meanwhile (on its first send
# or read): the request never reached the server, and goes once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_FAILURES = (OSError, http.client.HTTPException)


class PlainHTTPTransport(httpx.BaseTransport):
    """Plain HTTP/1.1 to any `http://` URL: thread-safe, idle connections kept for reuse."""

    def __init__(self) -> None:
        self._idle: list[tuple[str, int, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or not url.host:
            raise httpx.UnsupportedProtocol(f"plain HTTP only, not {url}", request=request)
        host, port = url.host, url.port or 80
        timeouts = request.extensions.get("timeout", {})
        body = _body(request)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        target = url.raw_path.decode("ascii")
        while True:
            conn, reused = self._connection(host, port, timeouts.get("connect"))
            try:
                _settimeout(conn, timeouts.get("write"))
                conn.request(
                    request.method,
                    target,
                    body=body,
                    headers=dict(headers),
                    encode_chunked=not isinstance(body, bytes | None),
                )
                _settimeout(conn, timeouts.get("read"))
                response = conn.getresponse()
            except _STALE as exc:
                conn.close()
                if reused and isinstance(body, bytes | None):
                    continue
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
            except _FAILURES as exc:
                conn.close()
                raise _translated(exc) from exc
            except BaseException:
                conn.close()
                raise
            return httpx.Response(
                response.status,
                headers=response.getheaders(),
                stream=_Body(response, conn, functools.partial(self._release, host, port, conn)),
                extensions={
                    "http_version": b"HTTP/1.1",
                    "reason_phrase": response.reason.encode("latin-1"),
                },
            )

    def _connection(
        self, host: str, port: int, timeout: float | None
    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `host:port` the server has not closed, else a new one."""
        with self._lock:
            while True:
                found = next(
                    (i for i, (h, p, _) in enumerate(self._idle) if (h, p) == (host, port)), None
                )
                if found is None:
                    break
                conn = self._idle.pop(found)[2]
                if _still_open(conn):
                    return conn, True
                conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except _FAILURES as exc:
            conn.close()
            raise _translated(exc, connecting=True) from exc
        return conn, False

    def _release(self, host: str, port: int, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((host, port, conn))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, _, conn in idle:
            conn.close()


class _Body(httpx.SyncByteStream):
    """A response's body, read as it is iterated; its connection goes back for reuse once
    the body was read to its end (and the server keeps it open), else it is closed."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        release: Callable[[], None],
    ) -> None:
        self._response = response
        self._conn = conn
        self._release = release
        self._done = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            # `read` (not `read1`): at the body's end it marks the response closed, which
            # the connection needs before its next request.
            while chunk := self._response.read(_CHUNK):
                yield chunk
        except _FAILURES as exc:
            self._response.close()
            raise _translated(exc) from exc
        self._done = True

    def close(self) -> None:
        if self._closed:  # once only: a connection handed back twice would serve two at once
            return
        self._closed = True
        reusable = self._done and not self._response.will_close
        self._response.close()
        if reusable:
            self._release()
        else:  # a body left unread, or the server said it closes: the connection goes too
            self._conn.close()


def _body(request: httpx.Request) -> bytes | Iterator[bytes] | None:
    """What `http.client` sends: the whole body when httpx has it in memory, else its
    chunks (sent chunked, as httpx declared in the headers)."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        data = b"".join(stream)
        return data or None
    assert isinstance(stream, httpx.SyncByteStream)
    return iter(stream)


def _settimeout(conn: http.client.HTTPConnection, seconds: float | None) -> None:
    if conn.sock is not None:
        conn.sock.settimeout(seconds)


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is still usable: nothing to read on it (a server that
    closed it shows end of file)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _translated(exc: BaseException, *, connecting: bool = False) -> httpx.TransportError:
    """httpx's exception for a failure of `http.client` or the socket under it."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(message) if connecting else httpx.ReadTimeout(message)
    if connecting:
        return httpx.ConnectError(message)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)
