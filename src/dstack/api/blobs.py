"""`HttpBlobStore`: the blob store of a server, reached through its `/api/blobs` endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dstack.api.transport import BLOB_TIMEOUT, OnSession, Response
from dstack.errors import NotFoundError, StorageError
from dstack.models.digests import LEGACY, Algorithm, Hasher, new_hasher
from dstack.storage.base import (
    CHUNK_SIZE,
    check_digest,
    hash_file,
    mismatch,
    save_chunks,
    verify,
    verify_bytes,
)


class HttpBlobStore(OnSession):
    """HEAD/GET/PUT `/api/blobs/{digest}` and POST `/api/blobs/missing`.

    Uploads are streamed and hashed on the way (a file that no longer matches its digest
    raises `BlobMismatchError`; the server refuses it too); downloads are verified before
    they replace their target. Failures are the server's session's (`Transport`): an
    unreachable server is `ServerUnreachableError`, a refused token `AuthError`.
    A `BlobStore`, not an `AdminBlobStore`: deleting and listing blobs are the server's
    business (`dstack rm`, its garbage collector), not a client's.
    Thread-safe (one pooled session).
    """

    def __enter__(self) -> HttpBlobStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def exists(self, digest: str) -> bool:
        response = self._request("HEAD", f"/api/blobs/{check_digest(digest)}", missing_ok=True)
        return response.status_code == 200

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) the server lacks, in one request; a
        server without the batch endpoint is asked per digest."""
        unique = [check_digest(d) for d in dict.fromkeys(digests)]
        if not unique:
            return []
        response = self._request(
            "POST", "/api/blobs/missing", json={"digests": unique}, missing_ok=True
        )
        if response.status_code in (404, 405):
            return [d for d in unique if not self.exists(d)]
        answer = set(_json(response, "missing", f"{self._session.base_url}/api/blobs/missing"))
        return [d for d in unique if d in answer]

    def put_file(self, path: Path, digest: str) -> None:
        hasher = new_hasher()
        try:
            with path.open("rb") as file:
                self._put(digest, _hashing(file.read, hasher))
        except OSError as exc:
            raise StorageError(f"cannot upload {path} as blob {digest}: {exc.strerror}") from exc
        except StorageError:
            if hasher.hexdigest() != digest and hash_file(path, LEGACY) != digest:
                raise mismatch(digest, hasher.hexdigest()) from None
            raise

    def put_bytes(self, data: bytes, digest: str) -> None:
        verify_bytes(data, check_digest(digest))
        self._put(digest, data)

    def open(self, digest: str) -> Iterator[bytes]:
        check_digest(digest)
        self.size(digest)  # a missing blob fails here, before the first chunk is asked for
        return self._chunks(digest)

    def size(self, digest: str) -> int:
        response = self._request("HEAD", f"/api/blobs/{check_digest(digest)}", missing_ok=True)
        if response.status_code == 404:
            raise NotFoundError(f"blob {digest} not found on {self._session.base_url}")
        return int(response.headers.get("content-length", "0"))

    def get_file(self, digest: str, target: Path) -> None:
        save_chunks(self.open(digest), target)

    def _put(self, digest: str, content: bytes | Iterator[bytes]) -> None:
        self._request("PUT", f"/api/blobs/{check_digest(digest)}", content=content)

    def _chunks(self, digest: str) -> Iterator[bytes]:
        hasher = new_hasher()
        with self._session.stream("GET", f"/api/blobs/{digest}", timeout=BLOB_TIMEOUT) as response:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                hasher.update(chunk)
                yield chunk
        verify(digest, hasher.hexdigest(), lambda: self._digest_again(digest, LEGACY))

    def _digest_again(self, digest: str, algorithm: Algorithm) -> str:
        """The digest of the blob, downloaded again (a blob stored before BLAKE3)."""
        hasher = new_hasher(0, algorithm)
        with self._session.stream("GET", f"/api/blobs/{digest}", timeout=BLOB_TIMEOUT) as response:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                hasher.update(chunk)
        return hasher.hexdigest()

    def _request(
        self, method: str, url: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> Response:
        accept = (404, 405) if missing_ok else ()
        return self._session.request(method, url, accept=accept, timeout=BLOB_TIMEOUT, **kwargs)


def _hashing(read: Callable[[int], bytes], hasher: Hasher) -> Iterator[bytes]:
    while chunk := read(CHUNK_SIZE):
        hasher.update(chunk)
        yield chunk


def _json(response: Response, key: str, where: str) -> list[str]:
    try:
        value = response.json()[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"unexpected answer from {where}") from exc
    return [str(v) for v in value]
