"""`Transport`: the one HTTP session with a dstack server, which every client is built on.

It attaches the credential (one `Authorization: Bearer` header, switchable once a runner has
its own), retries what never reached the server, and turns every failure into the same
`dstack.errors` exception whoever asked: the user's `Client`, the runner's `RunnerClient`, the
blob stores of both (`api.blobs`, `api.presigned`).

The retry policy lives here too, once: `Backoff` (the pauses) and `Reconnect` (what a client
that stays attached — `dstack run`, `dstack logs -f`, `dstack attach` — does while the server
is away: say so once, try again, carry on or give up after a bound).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from dstack.api.plainhttp import Timeouts
from dstack.errors import (
    AuthError,
    BackendError,
    ConfigError,
    ConflictError,
    DstackError,
    ForbiddenError,
    MissingBlobsError,
    NotFoundError,
    ServerError,
    ServerGoneError,
    ServerUnreachableError,
    StorageError,
)

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

PLAIN_HTTP: Literal["plain"] = "plain"
"""A `transport` that makes `Transport` speak plain HTTP through the standard library
(`api.plainhttp`), without importing httpx: for the CLI and its local server."""


class Response(Protocol):
    """What callers read of an answer: `httpx.Response` and `plainhttp.PlainResponse`."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def headers(self) -> Any: ...
    @property
    def is_error(self) -> bool: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...
    def read(self) -> bytes: ...
    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]: ...


# The `code` of the server's error bodies (`server/errors.py`), then the status when a body
# has none (a proxy's answer, a bare 401, a framework's 413).
_CODES: dict[str, type[DstackError]] = {
    "unauthorized": AuthError,
    "forbidden": ForbiddenError,
    "missing_blobs": MissingBlobsError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "storage": StorageError,
    "invalid": ConfigError,
    "backend": BackendError,
}
_STATUSES: dict[int, type[DstackError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: ConfigError,
    422: ConfigError,
}
_UNREACHABLE_HINT = "check that it is running and reachable"
# How long an attached client waits for a server that went away (`Reconnect`), by default.
RECONNECT_FOR = 300.0


@dataclass(frozen=True)
class Backoff:
    """The one retry policy of the clients: pauses from `first` seconds, doubling up to
    `most`."""

    first: float = 0.5
    most: float = 5.0

    def pauses(self) -> Iterator[float]:
        """The pauses between tries, without end."""
        pause = self.first
        while True:
            yield pause
            pause = min(pause * 2, self.most)


class Transport:
    """An HTTP session with the server at `base_url`, sending `token` as its credential.

    `request` returns a success or raises: unreachable or no answer in time →
    `ServerUnreachableError`; an error answer → the `DstackError` its body (or status) names,
    with the server's message and hint (`error_from_response`). A request that never reached
    the server is sent again, with exponential backoff, for up to `retry_for` seconds (0: once);
    a streamed body cannot be sent twice and is never retried. Thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | Timeouts = 30.0,
        retry_for: float = 0.0,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
        auth_hint: str = "check the token",
        transport: httpx.BaseTransport | Literal["plain"] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`transport`: httpx's to use (tests), `PLAIN_HTTP` for the standard library's
        (an `http://` server), None for httpx's own."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._auth_hint = auth_hint
        self._retry_for = retry_for
        self._backoff = Backoff(backoff, backoff_max)
        self._sleep = sleep
        self.on_no_answer: Callable[[], None] | None = None
        """Called whenever a request got no answer (each try of one retried): a local
        runner then looks for where its server went (`dstack.runner.follow`)."""
        self._http: Any
        if transport == PLAIN_HTTP:
            from dstack.api import plainhttp  # imported above; named here for its errors

            self._http = plainhttp.PlainSession(self.base_url, timeout)
            self._failures = self._resendable = plainhttp.FAILURES
            self._is_timeout: Callable[[BaseException], bool] = plainhttp.timed_out
        else:
            # httpx: about 25 ms of a start that the CLI's local server does not need
            from dstack.api import httpxsession

            assert not isinstance(transport, str)
            self._http = httpxsession.HttpxSession(self.base_url, timeout, transport)
            self._failures = httpxsession.FAILURES
            self._resendable = httpxsession.RESENDABLE
            self._is_timeout = httpxsession.is_timeout

    @property
    def token(self) -> str:
        """The credential every request carries from now on."""
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        self._token = value

    def rebase(self, base_url: str, token: str | None = None) -> None:
        """Send every later request (and the retries of those in flight) to `base_url`, with
        `token` when given: the server moved (a local server restarted on another port)."""
        self.base_url = base_url.rstrip("/")
        self._http.rebase(self.base_url)
        if token is not None:
            self._token = token

    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        """The header that carries `token` (default: the session's credential): the only place
        a credential is put on the wire, also for the connections httpx does not make."""
        return {"Authorization": f"Bearer {token if token is not None else self._token}"}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        accept: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Response:
        """Send a request; return the response when it succeeded (or its status is one of
        `accept`), else raise. `token` replaces the credential for this request only."""
        headers = {**kwargs.pop("headers", {}), **self.auth_headers(token)}
        retry = self._retry_for > 0 and _resendable(kwargs.get("content"))
        deadline = time.monotonic() + self._retry_for
        pauses = self._backoff.pauses()
        while True:
            try:
                response: Response = self._http.request(method, path, headers=headers, **kwargs)
            except self._failures as exc:
                self._no_answer()
                pause = next(pauses)
                resend = retry and isinstance(exc, self._resendable)
                if not resend or time.monotonic() + pause > deadline:
                    raise self.unreachable(exc) from exc
                self._sleep(pause)
                continue
            if response.is_error and response.status_code not in accept:
                raise self.error(response, method, path)
            return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Response]:
        """A streamed successful response (its body not read yet); raises as `request` does,
        also for a failure while the body is read."""
        headers = {**kwargs.pop("headers", {}), **self.auth_headers()}
        try:
            with self._http.stream(method, path, headers=headers, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise self.error(response, method, path)
                yield response
        except self._failures as exc:
            self._no_answer()
            raise self.unreachable(exc) from exc

    def _no_answer(self) -> None:
        if self.on_no_answer is not None:
            self.on_no_answer()

    def error(self, response: Response, method: str, path: str) -> DstackError:
        """The `DstackError` an error answer of this server stands for."""
        return error_from_response(
            response, server=self.base_url, auth_hint=self._auth_hint, asked=f"{method} {path}"
        )

    def unreachable(self, exc: BaseException) -> ServerUnreachableError:
        """The error for a request that got no answer."""
        if self._is_timeout(exc):
            message = f"the dstack server at {self.base_url} did not answer in time"
        else:
            message = f"cannot reach the dstack server at {self.base_url}: {exc}"
        return ServerUnreachableError(message, hint=_UNREACHABLE_HINT)


BLOB_TIMEOUT = Timeouts(connect=30.0, read=300.0)
"""Of blob transfers and presigning: a large blob's bytes may take minutes to flow."""


class OnSession:
    """A client of the blob endpoints speaking through a `Transport`: its own (made from a URL
    and a token, closed with it) or an open one it shares (`sharing`: left open)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | Literal["plain"] | None = None,
    ) -> None:
        self._session = Transport(base_url, token, timeout=BLOB_TIMEOUT, transport=transport)
        self._owned = True

    @classmethod
    def sharing(cls, session: Transport) -> Self:
        """One on an open session (its credential, its connections); `close()` leaves it open."""
        client = cls.__new__(cls)
        client._session, client._owned = session, False
        return client

    def close(self) -> None:
        """Close the pooled connections of an own session (a shared one stays open)."""
        if self._owned:
            self._session.close()


class Reconnect:
    """Rides out a server that went away, for a client that stays attached to it.

    `call(fn)` returns what `fn` returns. While `fn` raises `ServerUnreachableError`, it says
    once on `say` that the server is unreachable, calls `refresh` (which may point the client
    at where the server is now: the local server can come back on another port; a failing
    `refresh` raises `ServerUnreachableError` too), pauses by `backoff` and calls `fn` again;
    once a call succeeds it says "reconnected". `fn` must be safe to call again: a read, or a
    step that prints only what its last call did not. When the server has been away for
    `give_up_after` seconds it raises `ServerGoneError` (one line, `what_then` appended).
    Other errors pass through at once; a Ctrl+C during a pause too (`reconnecting` says so).
    """

    def __init__(
        self,
        *,
        say: Callable[[str], None],
        give_up_after: float = RECONNECT_FOR,
        backoff: Backoff = Backoff(),
        refresh: Callable[[], None] | None = None,
        what_then: str = "",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self.give_up_after = give_up_after
        self._backoff = backoff
        self._refresh = refresh
        self.what_then = what_then
        self._sleep = sleep
        self._clock = clock
        self.reconnecting = False

    def call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ServerUnreachableError as exc:
            return self._ride_out(fn, exc)

    def _ride_out(self, fn: Callable[[], T], first: ServerUnreachableError) -> T:
        self.reconnecting = True
        self._say("server unreachable, reconnecting…")
        since = self._clock()
        for pause in self._backoff.pauses():
            left = since + self.give_up_after - self._clock()
            if left <= 0:
                raise self._gone(first)
            self._sleep(min(pause, left))
            try:
                if self._refresh is not None:
                    self._refresh()
                result = fn()
            except ServerUnreachableError:
                continue
            self.reconnecting = False
            self._say("reconnected")
            return result
        raise AssertionError("unreachable: pauses never end")

    def _gone(self, first: ServerUnreachableError) -> ServerGoneError:
        message = f"gave up after {self.give_up_after:g}s without the server: {first.message}"
        if self.what_then:
            message += f"; {self.what_then}"
        return ServerGoneError(message)


def error_from_response(
    response: Response, *, server: str = "", auth_hint: str = "check the token", asked: str = ""
) -> DstackError:
    """The one decoder of the server's error answers (`{"error": {code, message, hint}}`):
    the class its `code` names, else its status's, else `ServerError`."""
    code, message, hint = None, None, None
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        error = response.json()["error"]
        code, message, hint = error.get("code"), error.get("message"), error.get("hint")
    if response.status_code == 401:
        where = f" ({server})" if server else ""
        return AuthError(f"the dstack server rejected the token{where}", hint=hint or auth_hint)
    cls = _CODES.get(str(code)) or _STATUSES.get(response.status_code, ServerError)
    if not message:
        where = f"{asked.partition('?')[0]}: " if asked else ""
        message = f"{where}HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return cls(str(message), hint)


def _resendable(content: object) -> bool:
    """Whether a request body can be sent again (an iterator is consumed by the first try)."""
    return content is None or isinstance(content, bytes | str)
