"""`Transport`: the one HTTP session with a dstack server, which every client is built on.

It attaches the credential (one `Authorization: Bearer` header, switchable once a runner has
its own), retries what never reached the server, and turns every failure into the same
`dstack.errors` exception whoever asked: the user's `Client`, the runner's `RunnerClient`, the
blob stores of both (`storage.http`, `storage.presigned`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

import httpx

from dstack.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DstackError,
    ForbiddenError,
    MissingBlobsError,
    NotFoundError,
    ServerError,
    ServerUnreachableError,
    StorageError,
)

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
        timeout: float | httpx.Timeout = 30.0,
        retry_for: float = 0.0,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
        auth_hint: str = "check the token",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._auth_hint = auth_hint
        self._retry_for = retry_for
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._sleep = sleep
        mounts: dict[str, httpx.BaseTransport] = {}
        if transport is None and self.base_url.startswith("http://"):
            # A plain-HTTP server needs no TLS: skip loading the CA bundle (tens of ms on
            # every command); an https:// URL still gets a verifying transport, built on use.
            transport = httpx.HTTPTransport(verify=False)
            mounts["https://"] = _VerifyingTransport()
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, mounts=mounts or None
        )

    @property
    def token(self) -> str:
        """The credential every request carries from now on."""
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        self._token = value

    def rebase(self, base_url: str) -> None:
        """Send every later request (and the retries of those in flight) to `base_url`: the
        server moved (a local server restarted on another port)."""
        self.base_url = base_url.rstrip("/")
        self._http.base_url = self.base_url

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
    ) -> httpx.Response:
        """Send a request; return the response when it succeeded (or its status is one of
        `accept`), else raise. `token` replaces the credential for this request only."""
        headers = {**kwargs.pop("headers", {}), **self.auth_headers(token)}
        retry = self._retry_for > 0 and _resendable(kwargs.get("content"))
        deadline = time.monotonic() + self._retry_for
        pause = self._backoff
        while True:
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if not retry or time.monotonic() + pause > deadline:
                    raise self.unreachable(exc) from exc
                self._sleep(pause)
                pause = min(pause * 2, self._backoff_max)
                continue
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from exc
            if response.is_error and response.status_code not in accept:
                raise self.error(response)
            return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed successful response (its body not read yet); raises as `request` does,
        also for a failure while the body is read."""
        headers = {**kwargs.pop("headers", {}), **self.auth_headers()}
        try:
            with self._http.stream(method, path, headers=headers, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise self.error(response)
                yield response
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from exc

    def error(self, response: httpx.Response) -> DstackError:
        """The `DstackError` an error answer of this server stands for."""
        return error_from_response(response, server=self.base_url, auth_hint=self._auth_hint)

    def unreachable(self, exc: httpx.HTTPError) -> ServerUnreachableError:
        """The error for a request that got no answer."""
        if isinstance(exc, httpx.TimeoutException):
            message = f"the dstack server at {self.base_url} did not answer in time"
        else:
            message = f"cannot reach the dstack server at {self.base_url}: {exc}"
        return ServerUnreachableError(message, hint=_UNREACHABLE_HINT)


def error_from_response(
    response: httpx.Response, *, server: str = "", auth_hint: str = "check the token"
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
        where = f"{response.request.method} {response.request.url.path}"
        message = f"{where}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return cls(str(message), hint)


def _resendable(content: object) -> bool:
    """Whether a request body can be sent again (an iterator is consumed by the first try)."""
    return content is None or isinstance(content, bytes | str)


class _VerifyingTransport(httpx.BaseTransport):
    """`httpx.HTTPTransport()` with the default certificate checks, created at its first
    request, so that a client that never leaves plain HTTP never builds an SSL context."""

    def __init__(self) -> None:
        self._inner: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = httpx.HTTPTransport()
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
