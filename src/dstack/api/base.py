"""What every client of the server shares: the session (`Transport`), blobs, list models."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from pydantic import BaseModel, TypeAdapter

from dstack.api.transport import Response, Transport, error_from_response
from dstack.errors import NotFoundError, StorageError
from dstack.models.digests import ALGORITHM, LEGACY, digest_file, new_hasher
from dstack.models.runs_api import MissingBlobsRequest, MissingBlobsResponse

if TYPE_CHECKING:
    import httpx

    from dstack.api.blobs import HttpBlobStore
    from dstack.storage.base import BlobStore

__all__ = ["BaseClient", "error_from_response", "validate_list"]

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
    """A user's session with the server (`Transport`): every failure is a `DstackError`,
    unreachable → `ServerUnreachableError`, 401 → `AuthError`, 403 → `ForbiddenError`, 404 →
    `NotFoundError`, 409 → `ConflictError`, carrying the server's message and hint.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | Literal["plain"] | None = None,
        blob_dir: Path | None = None,
    ) -> None:
        """`blob_dir`: the server's blob folder when this process may read and write it
        directly (the local server's, as its runner does); None: its `/api/blobs`."""
        self._blob_dir = blob_dir
        self._blob_store: BlobStore | None = None
        self._own_store: HttpBlobStore | None = None
        self._http_transport = transport
        self.transport = Transport(
            base_url,
            token,
            timeout=timeout,
            transport=transport,
            auth_hint="check the token of this server (`dstack config`)",
        )
        self.base_url = self.transport.base_url

    def close(self) -> None:
        """Close the session and the blob store's own (`blob_store`)."""
        self.transport.close()
        if self._own_store is not None:
            self._own_store.close()

    def blob_store(self) -> BlobStore:
        """The server's blob store: its folder when this client was given one (`blob_dir`),
        else its `/api/blobs` endpoints on a session of their own (a blob may take longer
        than a request). One store per client, closed with it."""
        if self._blob_store is None:
            self._blob_store = self._open_blob_store()
        return self._blob_store

    def _open_blob_store(self) -> BlobStore:
        # The stores are imported here: 10-15 ms each at start, and most commands move no blob.
        if self._blob_dir is not None:
            from dstack.storage.local import LocalBlobStore  # see above

            return LocalBlobStore(self._blob_dir)
        from dstack.api.blobs import HttpBlobStore  # see above

        store = HttpBlobStore(self.base_url, self.transport.token, transport=self._http_transport)
        self._own_store = store
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """Send a request; return the response when it is a success, else raise."""
        return self.transport.request(method, path, **kwargs)

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

    def put_blob(
        self, path: Path, digest: str, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """Upload a file, streamed; the server verifies it against `digest`. `progress` is
        called with the size of each chunk as it is sent."""
        with path.open("rb") as file:
            chunks: Iterator[bytes] = iter(lambda: file.read(_CHUNK), b"")
            self.request(
                "PUT",
                f"/api/blobs/{digest}",
                content=chunks if progress is None else _reported(chunks, progress),
                headers={"content-type": "application/octet-stream"},
            )

    def get_blob(self, digest: str, target: Path) -> None:
        """Download a blob to `target` (replaced atomically once verified)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".dstack-")
        try:
            with os.fdopen(fd, "wb") as out:
                hasher = self._download(digest, out)
            if hasher != digest and digest_file(name, LEGACY) != digest:
                raise StorageError(
                    f"blob {digest} arrived corrupted ({ALGORITHM} {hasher})",
                    hint="download it again",
                )
            os.replace(name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _download(self, digest: str, out: Any) -> str:
        hasher = new_hasher()
        with self.transport.stream("GET", f"/api/blobs/{digest}") as response:
            for chunk in response.iter_bytes(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        return hasher.hexdigest()


def _reported(chunks: Iterator[bytes], progress: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        progress(len(chunk))
