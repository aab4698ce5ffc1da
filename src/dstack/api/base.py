"""What every client of the server shares: the HTTP session, error translation, blobs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from dstack.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    DstackError,
    MissingBlobsError,
    NotFoundError,
    ServerError,
    StorageError,
)
from dstack.models.runs_api import MissingBlobsRequest, MissingBlobsResponse

_CODES: dict[str, type[DstackError]] = {
    "unauthorized": AuthError,
    "missing_blobs": MissingBlobsError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "storage": StorageError,
    "invalid": ConfigError,
}
_STATUSES: dict[int, type[DstackError]] = {401: AuthError, 404: NotFoundError, 409: ConflictError}
_CHUNK = 1024 * 1024
M = TypeVar("M", bound=BaseModel)
_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def validate_list(model: type[M], data: object) -> list[M]:
    """`data` validated as a list of `model`. The validator is built on first use (building
    every one at import would slow down each command's start)."""
    adapter = _LIST_ADAPTERS.get(model)
    if adapter is None:
        adapter = _LIST_ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    result: list[M] = adapter.validate_python(data)
    return result


class BaseClient:
    """An HTTP session with the server. Every failure becomes a `DstackError`:
    unreachable → `ServerError`, 401 → `AuthError`, 404 → `NotFoundError`, 409 →
    `ConflictError`, a digest mismatch → `StorageError`, carrying the server's message and hint.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        mounts: dict[str, httpx.BaseTransport] = {}
        if transport is None and self.base_url.startswith("http://"):
            # A plain-HTTP server needs no TLS: skip loading the CA bundle (tens of ms on
            # every command); an https:// URL still gets a verifying transport, built on use.
            transport = httpx.HTTPTransport(verify=False)
            mounts["https://"] = _VerifyingTransport()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            mounts=mounts or None,
        )

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

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; return the response when it is a success, else raise."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServerError(
                f"the dstack server at {self.base_url} did not answer in time",
                hint="check that it is running and reachable",
            ) from exc
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach the dstack server at {self.base_url}: {exc}",
                hint="check that it is running and reachable",
            ) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    # --- blobs -----------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/api/blobs/{digest}")
        except NotFoundError:
            return False
        return True

    def missing_blobs(self, digests: list[str]) -> list[str]:
        """Which of `digests` the server's store lacks (upload those, then the manifest)."""
        body = MissingBlobsRequest(digests=digests).model_dump(mode="json")
        response = self.request("POST", "/api/blobs/missing", json=body)
        return MissingBlobsResponse.model_validate(response.json()).missing

    def put_blob(self, path: Path, digest: str) -> None:
        """Upload a file, streamed; the server verifies it against `digest`."""
        with path.open("rb") as file:
            self.request(
                "PUT",
                f"/api/blobs/{digest}",
                content=iter(lambda: file.read(_CHUNK), b""),
                headers={"content-type": "application/octet-stream"},
            )

    def get_blob(self, digest: str, target: Path) -> None:
        """Download a blob to `target` (replaced atomically once verified)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".dstack-")
        try:
            with os.fdopen(fd, "wb") as out:
                hasher = self._download(digest, out)
            if hasher != digest:
                raise StorageError(
                    f"blob {digest} arrived corrupted (sha256 {hasher})", hint="download it again"
                )
            os.replace(name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _download(self, digest: str, out: Any) -> str:
        hasher = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/api/blobs/{digest}") as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                for chunk in response.iter_bytes(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise ServerError(f"downloading blob {digest} failed: {exc}") from exc
        return hasher.hexdigest()


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


def error_from_response(response: httpx.Response) -> DstackError:
    """The `DstackError` an error response stands for."""
    code, message, hint = None, None, None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json()["error"]
        code, message, hint = error.get("code"), error.get("message"), error.get("hint")
    if response.status_code == 401:
        return AuthError(
            "the dstack server rejected the token",
            hint="check the token of this server (`dstack config`)",
        )
    cls = _CODES.get(code or "") or _STATUSES.get(response.status_code, ServerError)
    text = (
        message
        or f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}"
    )
    return cls(text, hint)
