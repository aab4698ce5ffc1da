"""`PresignedBlobStore`: bytes straight to and from object storage, with URLs a server signs.

The server answers "which blobs are missing" and hands out short-lived GET/PUT URLs
(`POST /api/blobs/missing`, `POST /api/blobs/presign`); the bytes never pass through it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import httpx

from dstack.api.httpxsession import httpx_timeout
from dstack.api.transport import BLOB_TIMEOUT, OnSession
from dstack.errors import NotFoundError, StorageError
from dstack.models.digests import LEGACY, Hasher, new_hasher
from dstack.storage.base import (
    CHUNK_SIZE,
    check_digest,
    hash_file,
    mismatch,
    save_chunks,
    verify,
    verify_bytes,
)


class Presigner(Protocol):
    """What `PresignedBlobStore` asks of the server."""

    def presign(self, digests: list[str], method: str) -> dict[str, str]:
        """digest → URL valid for a while, for `GET` or `PUT`. Raises `StorageError` when
        the server has no object storage, `AuthError` for a refused token."""

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) that the store lacks."""

    def close(self) -> None:
        """Release its connections (one without any does nothing). Idempotent."""


class ServerPresigner(OnSession):
    """`Presigner` over a server's HTTP API (user or runner credential), on its `Transport`."""

    def presign(self, digests: list[str], method: str) -> dict[str, str]:
        body = {"digests": [check_digest(d) for d in digests], "method": method}
        urls = self._post("/api/blobs/presign", body).get("urls")
        if not isinstance(urls, dict):
            raise StorageError(f"unexpected answer from {self._session.base_url}/api/blobs/presign")
        return {str(k): str(v) for k, v in urls.items()}

    def missing(self, digests: list[str]) -> list[str]:
        unique = [check_digest(d) for d in dict.fromkeys(digests)]
        if not unique:
            return []
        listed = self._post("/api/blobs/missing", {"digests": unique}).get("missing")
        answer = {str(d) for d in listed} if isinstance(listed, list) else set()
        return [d for d in unique if d in answer]

    def _post(self, path: str, body: object) -> dict[str, object]:
        response = self._session.request("POST", path, json=body, timeout=BLOB_TIMEOUT)
        data = response.json()
        return data if isinstance(data, dict) else {}


class PresignedBlobStore:
    """A `BlobStore` whose bytes move between this machine and S3 over presigned URLs.

    S3 cannot check a BLAKE3 digest (`dstack.storage.s3`), so an upload is hashed while it is
    sent, in the same read, and its last chunk is held back until the digest matches: on a
    mismatch the request is cut short of its `content-length` and S3 stores nothing.
    Downloads are verified before they replace their target. Network failures become `StorageError`.
    A `BlobStore`, not an `AdminBlobStore`: deleting and listing blobs are the server's
    business, not a client's. Thread-safe.
    A single upload is limited to S3's 5 GiB per PUT.
    """

    def __init__(self, presigner: Presigner, *, transport: httpx.BaseTransport | None = None):
        self._presigner = presigner
        self._http = httpx.Client(transport=transport, timeout=httpx_timeout(BLOB_TIMEOUT))

    def close(self) -> None:
        """Close this store's connections and its presigner's."""
        self._http.close()
        self._presigner.close()

    def exists(self, digest: str) -> bool:
        return not self._presigner.missing([check_digest(digest)])

    def missing(self, digests: list[str]) -> list[str]:
        return self._presigner.missing(digests)

    def put_bytes(self, data: bytes, digest: str) -> None:
        verify_bytes(data, check_digest(digest))
        if self.exists(digest):
            return
        self._put(digest, data, len(data))

    def put_file(self, path: Path, digest: str) -> None:
        if self.exists(digest):
            return
        try:
            with path.open("rb", buffering=0) as file:
                size = os.fstat(file.fileno()).st_size
                hasher = new_hasher(size)
                checked = _checked_chunks(file, size, hasher, _legacy(path, digest))
                self._put(digest, checked, size)
        except _Mismatch:
            raise mismatch(digest, hasher.hexdigest()) from None
        except OSError as exc:
            raise StorageError(f"cannot upload {path} as blob {digest}: {exc.strerror}") from exc

    def size(self, digest: str) -> int:
        with self._get(digest) as response:
            return int(response.headers.get("content-length", "0"))

    def open(self, digest: str) -> Iterator[bytes]:
        stream = self._get(digest)
        response = stream.__enter__()  # a missing blob fails here, before the first chunk
        return self._verified(stream, response, digest)

    def get_file(self, digest: str, target: Path) -> None:
        save_chunks(self.open(digest), target)

    def _url(self, digest: str, method: str) -> str:
        url = self._presigner.presign([check_digest(digest)], method).get(digest)
        if url is None:
            raise StorageError(f"the server gave no {method} URL for blob {digest}")
        return url

    def _put(self, digest: str, content: bytes | Iterator[bytes], size: int) -> None:
        headers = {"content-length": str(size)}
        url = self._url(digest, "PUT")
        try:
            response = self._http.put(url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        if response.status_code >= 300:
            raise StorageError(
                f"object storage refused blob {digest} ({response.status_code})",
                hint="the upload URL may have expired; run the command again",
            )

    @contextlib.contextmanager
    def _get(self, digest: str) -> Iterator[httpx.Response]:
        url = self._url(digest, "GET")
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code == 404:
                    raise NotFoundError(f"blob {digest} not found")
                if response.status_code >= 300:
                    raise StorageError(
                        f"object storage answered {response.status_code} for blob {digest}"
                    )
                yield response
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    def _verified(
        self,
        stream: contextlib.AbstractContextManager[httpx.Response],
        response: httpx.Response,
        digest: str,
    ) -> Iterator[bytes]:
        hasher = new_hasher()
        try:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                hasher.update(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        finally:
            stream.__exit__(None, None, None)
        verify(digest, hasher.hexdigest(), lambda: self._digest_again(digest))

    def _digest_again(self, digest: str) -> str:
        """The sha256 of the blob, downloaded again (a blob stored before BLAKE3)."""
        hasher = new_hasher(0, LEGACY)
        with self._get(digest) as response:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                hasher.update(chunk)
        return hasher.hexdigest()


class _Mismatch(Exception):
    """Raised inside an upload's body: its bytes do not match the digest; the request is
    abandoned before its last chunk."""


def _checked_chunks(
    file: BinaryIO, size: int, hasher: Hasher, matches: Callable[[str], bool]
) -> Iterator[bytes]:
    """`size` bytes of `file`, hashed as they are read; the last chunk is yielded only when
    `matches(digest)` (so a wrong upload never reaches its `content-length`)."""
    sent = 0
    held = b""
    while sent < size:
        chunk = file.read(min(CHUNK_SIZE, size - sent))
        if not chunk:
            break
        hasher.update(chunk)
        if held:
            yield held
        held = chunk
        sent += len(chunk)
    if sent != size or file.read(1) or not matches(hasher.hexdigest()):
        raise _Mismatch
    yield held


def _legacy(path: Path, digest: str) -> Callable[[str], bool]:
    """Whether a file's BLAKE3 digest names it, or its sha256 (sent by a store of before
    BLAKE3): the latter read again only when the former differs."""
    return lambda actual: actual == digest or hash_file(path, LEGACY) == digest


def _unreachable(exc: httpx.HTTPError) -> StorageError:
    return StorageError(
        f"cannot reach object storage: {exc}",
        hint="check that this machine can reach the S3 endpoint the server uses",
    )
