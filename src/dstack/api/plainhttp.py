"""`PlainSession`: a `Transport`'s requests over the standard library's `http.client`.

For a server on plain HTTP on this machine that one command talks to briefly (the CLI and
its local server): importing httpx (its models, URL parsing, cookies, auth, TLS set-up) is
about 25 ms of every command's start, for what `http.client` does as well on a loopback
connection. Requests are encoded as httpx encodes them (JSON, query strings), connections
are kept alive and reused, one request at a time on each; a connection the server closed
meanwhile is retried once on a new one. Remote servers keep httpx (`api.httpxsession`): TLS,
proxies from the environment, HTTP/2.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json as jsonlib
import select
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

_CHUNK = 64 * 1024
# What a connection kept alive shows when the server closed it meanwhile (on its first send
# or read): the request never reached the server, and goes once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

_BROKEN = (OSError, http.client.HTTPException)


class NoAnswer(Exception):
    """A request that got no (whole) answer: its connection failed, or timed out. Only this
    session's own failures: an `OSError` of whoever reads a streamed answer is theirs."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.timed_out = isinstance(cause, TimeoutError)


FAILURES: tuple[type[BaseException], ...] = (NoAnswer,)
"""What a request that got no answer raises (the request may be sent again)."""


def timed_out(exc: BaseException) -> bool:
    return isinstance(exc, NoAnswer) and exc.timed_out


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect and to wait for each read (and write) of a request."""

    connect: float
    read: float

    @classmethod
    def of(cls, value: float | Timeouts) -> Timeouts:
        return value if isinstance(value, Timeouts) else cls(value, value)


class PlainResponse:
    """What a `Transport` caller reads of an answer (a subset of `httpx.Response`)."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        release: Callable[[], None],
        drop: Callable[[], None],
    ) -> None:
        """`release` hands its connection back for reuse, `drop` closes it."""
        self.status_code = response.status
        self.reason_phrase = response.reason
        self.headers = response.msg  # its `get` ignores the case of the name
        self._response = response
        self._release = release
        self._drop = drop
        self._content: bytes | None = None
        self._done = False
        self._closed = False

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body of a streamed answer was not read (`read()`)")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_bytes())
        return self._content

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        # `read` (not `read1`): at the body's end it marks the answer closed, which the
        # connection needs before its next request.
        while True:
            try:
                chunk = self._response.read(chunk_size or _CHUNK)
            except _BROKEN as exc:
                raise NoAnswer(exc) from exc
            if not chunk:
                break
            yield chunk
        self._done = True
        self.close()

    def close(self) -> None:
        """Hand the connection back for reuse once the body was read to its end (and the
        server keeps it open); else close it."""
        if self._closed:  # once only: a connection handed back twice would serve two at once
            return
        self._closed = True
        reusable = self._done and not self._response.will_close
        self._response.close()
        if reusable:
            self._release()
        else:
            self._drop()


class PlainSession:
    """Plain HTTP/1.1 to `base_url` (`http://host:port`): thread-safe, idle connections kept
    for reuse. Failures are `FAILURES`; answers are `PlainResponse`s."""

    def __init__(self, base_url: str, timeout: float | Timeouts) -> None:
        self._timeouts = Timeouts.of(timeout)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.rebase(base_url)

    def rebase(self, base_url: str) -> None:
        """Send the next requests to `base_url` (connections to the old one are dropped)."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"plain HTTP only, not {base_url}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> PlainResponse:
        """Send a request and read its whole answer."""
        response = self._send(method, path, **kwargs)
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[PlainResponse]:
        """A request whose answer's body is read as the caller iterates it."""
        response = self._send(method, path, **kwargs)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, object] | None = None,
        json: object = None,
        content: bytes | str | Iterable[bytes] | None = None,
        timeout: float | Timeouts | None = None,
    ) -> PlainResponse:
        timeouts = self._timeouts if timeout is None else Timeouts.of(timeout)
        target = self._prefix + path + (f"?{query(params)}" if params else "")
        sent = dict(headers or {})
        body: bytes | Iterable[bytes] | None
        if json is not None:
            body = encode_json(json)
            sent["Content-Type"] = "application/json"
        elif isinstance(content, str):
            body = content.encode()
        else:
            body = content
        if isinstance(body, bytes):
            sent["Content-Length"] = str(len(body))
        resendable = body is None or isinstance(body, bytes)
        while True:
            conn, reused = self._connection(timeouts.connect)
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeouts.read)
                conn.request(method, target, body=body, headers=sent)
                answer = conn.getresponse()
            except _STALE as exc:
                conn.close()
                if reused and resendable:
                    continue
                raise NoAnswer(exc) from exc
            except _BROKEN as exc:
                conn.close()
                raise NoAnswer(exc) from exc
            except BaseException:
                conn.close()
                raise
            return PlainResponse(answer, functools.partial(self._release, conn), conn.close)

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server has not closed, else a new one."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _still_open(conn):
                    return conn, True
                conn.close()
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.connect()
        except _BROKEN as exc:
            conn.close()
            raise NoAnswer(exc) from exc
        return conn, False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if conn.host == self._host and conn.port == self._port:
                self._idle.append(conn)
                return
        conn.close()  # to a server this session left (`rebase`)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def encode_json(value: object) -> bytes:
    """A JSON body as httpx encodes it: UTF-8, compact, no NaN."""
    text = jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def query(params: Mapping[str, object]) -> str:
    """A query string as httpx encodes it: JSON-style booleans, None as empty, a list or
    tuple as one key per value."""
    pairs = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(key, _text(v)) for v in values]
    return urlencode(pairs)


def _text(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


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
