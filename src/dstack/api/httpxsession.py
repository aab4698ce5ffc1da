"""`HttpxSession`: a `Transport`'s requests through httpx, for any server (TLS, proxies from
the environment); the CLI's local server is reached through `api.plainhttp` instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from dstack.api.plainhttp import Timeouts

FAILURES: tuple[type[BaseException], ...] = (httpx.HTTPError,)
RESENDABLE: tuple[type[BaseException], ...] = (httpx.TransportError,)
"""Failures of the connection: the request may be sent again (not a malformed URL or an
answer that could not be decoded)."""


def httpx_timeout(value: float | Timeouts | httpx.Timeout) -> float | httpx.Timeout:
    """httpx's form of a timeout (`Timeouts`: connect and read; writes wait as reads do)."""
    if isinstance(value, Timeouts):
        return httpx.Timeout(value.read, connect=value.connect)
    return value


class HttpxSession:
    """An `httpx.Client` on `base_url`, as `Transport` drives it."""

    def __init__(
        self,
        base_url: str,
        timeout: float | Timeouts | httpx.Timeout,
        transport: httpx.BaseTransport | None,
    ) -> None:
        mounts: dict[str, httpx.BaseTransport] = {}
        if transport is None and base_url.startswith("http://"):
            # A plain-HTTP server needs no TLS: skip loading the CA bundle (tens of ms on
            # every command); an https:// URL still gets a verifying transport, built on use.
            transport = httpx.HTTPTransport(verify=False)
            mounts["https://"] = _VerifyingTransport()
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx_timeout(timeout),
            transport=transport,
            mounts=mounts or None,
        )

    def rebase(self, base_url: str) -> None:
        self._client.base_url = httpx.URL(base_url)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, path, **_converted(kwargs))

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._client.stream(method, path, **_converted(kwargs)) as response:
            yield response

    def close(self) -> None:
        self._client.close()


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TimeoutException)


def _converted(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "timeout" in kwargs:
        kwargs["timeout"] = httpx_timeout(kwargs["timeout"])
    return kwargs


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
