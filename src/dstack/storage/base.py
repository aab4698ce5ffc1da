"""The blob store: content-addressed bytes (`dstack.models.digests`), nothing else.

Two protocols: `BlobStore`, what any holder of a store may do (put, get, ask, close), and
`AdminBlobStore`, what the store's owner (the server, its garbage collector) adds: listing
and deleting. Implementations: `LocalBlobStore` (a folder), `MemoryBlobStore` (the twin),
`S3BlobStore` (both protocols); in `dstack.api`, `HttpBlobStore` and `PresignedBlobStore` (a
client's view of a server's store: `BlobStore` only). Optional abilities are `Supports*`
protocols, tested with `isinstance`, each with a fallback. One contract suite
(`tests/storage/test_blobstore_contract.py`) runs against each implementation, for each
protocol it implements.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from dstack.errors import StorageError
from dstack.models.artifacts import StorageAccess
from dstack.models.digests import ALGORITHM, LEGACY, Algorithm, digest_bytes, digest_file

CHUNK_SIZE = 1024 * 1024
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore(Protocol):
    """What a client of a store may do. Every method may be called from several threads."""

    def exists(self, digest: str) -> bool:
        """True when the blob is stored. Never blocks on other writers."""

    def put_file(self, path: Path, digest: str) -> None:
        """Store the file's bytes under `digest` (hex, `dstack.models.digests`).

        Idempotent: storing an existing digest does nothing. Verifies the content; a mismatch
        raises `StorageError` and stores nothing. A reader never sees a partial blob.
        """

    def put_bytes(self, data: bytes, digest: str) -> None:
        """As `put_file`, from memory."""

    def open(self, digest: str) -> Iterator[bytes]:
        """Yield the blob's bytes in chunks. Missing: `NotFoundError`.

        The digest is checked while reading; a corrupt blob raises `StorageError` after its
        last chunk, so a consumer must not trust the bytes before the iterator is exhausted.
        """

    def size(self, digest: str) -> int:
        """The blob's size in bytes. Missing: `NotFoundError`."""

    def get_file(self, digest: str, target: Path) -> None:
        """Write the blob to `target` (replacing it atomically), verified against `digest`.

        Missing: `NotFoundError`; corrupt: `StorageError` naming the digest, target untouched.
        """

    def close(self) -> None:
        """Release what the store holds open (connection pools); a store without any does
        nothing. Idempotent; the store is not used afterwards."""


class AdminBlobStore(BlobStore, Protocol):
    """A store as its owner sees it: a client's store plus listing and deleting."""

    def delete(self, digest: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    def list_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order."""


@runtime_checkable
class SupportsMissing(Protocol):
    """A store that answers "which of these do you lack?" in one query (HTTP: one request)."""

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests of `digests` (in the order given) that are not stored."""


@runtime_checkable
class SupportsAdopt(Protocol):
    """A store that can take ownership of a file instead of copying it (same filesystem)."""

    def adopt(self, path: Path, digest: str, expected: os.stat_result | None = None) -> None:
        """Move `path` into the store as blob `digest`; `path` is gone afterwards. With
        `expected`, the caller vouches that the file hashed to `digest` in that stat."""


@runtime_checkable
class SupportsCopyIn(Protocol):
    """A store that can copy a file whose digest the caller already knows without hashing
    it again (a kernel copy on the same machine)."""

    def copy_in(self, path: Path, digest: str, expected: os.stat_result) -> None:
        """Store `path` as `digest`, hashed by the caller when its stat was `expected`."""


@runtime_checkable
class SupportsIngest(Protocol):
    """A store that can take a file whose digest nobody knows yet in one read: hashed while
    it is copied in (a local store; a remote one would need the digest before the upload)."""

    def ingest(self, path: Path | str, expected: os.stat_result | None = None) -> tuple[str, bool]:
        """Store `path` if it did not change while read (and has the stat `expected`);
        (digest of what was read, whether a new blob was stored). See
        `LocalBlobStore.ingest`."""


@runtime_checkable
class SupportsDirectAccess(Protocol):
    """A store that runners may reach without the server in the path: a folder on the
    server's machine (read and written in place) or a bucket (through presigned URLs)."""

    def direct_access(self) -> StorageAccess:
        """What a job assignment tells runners; stores without it are reached over HTTP."""


@runtime_checkable
class SupportsStoredAt(Protocol):
    """A store that knows when each blob was stored (a folder: its files' times). The garbage
    collector spares young blobs by this time; without it, by its own first sighting."""

    def stored_at(self, digest: str) -> datetime | None:
        """When the blob was stored (UTC); None when it is missing."""


class BlobMismatchError(StorageError):
    """Content does not hash to the digest it was stored or read under."""


def is_local(store: BlobStore) -> bool:
    """True for a store on this machine's disk: files can be moved into it (`SupportsAdopt`),
    and what it does per file is a few system calls, not a network round trip."""
    return isinstance(store, SupportsAdopt)


def missing_of(store: BlobStore, digests: list[str]) -> list[str]:
    """The distinct digests (in the order given) that `store` lacks: one batch query when the
    store offers `missing`, else `exists` per digest."""
    if isinstance(store, SupportsMissing):
        return store.missing(digests)
    return [d for d in dict.fromkeys(digests) if not store.exists(check_digest(d))]


def check_digest(digest: str) -> str:
    """Return `digest` if it is 64 lower-case hex characters, else raise `StorageError`."""
    if not _DIGEST_RE.match(digest):
        raise StorageError(
            f"'{digest}' is not a content digest", hint="use 64 lower-case hex characters"
        )
    return digest


def hash_file(path: Path | str, algorithm: Algorithm = ALGORITHM) -> str:
    """The hex digest of a file (`dstack.models.digests.digest_file`)."""
    return digest_file(path, algorithm)


def verify(digest: str, actual: str, legacy: Callable[[], str]) -> None:
    """Raise `BlobMismatchError` unless content whose BLAKE3 digest is `actual` is `digest`.

    A blob stored before the switch to BLAKE3 is named by its sha256
    (`dstack.models.digests.LEGACY`): only when `actual` differs is `legacy()` called, which
    hashes the same content again with sha256 (re-reading a file, fetching it again). When
    that second read fails too (the server that sent corrupt bytes breaks off again), the
    mismatch is what is reported: it is the first thing that went wrong."""
    if actual == digest:
        return
    try:
        again = legacy()
    except Exception:  # any failure to re-read: the content is still unverified
        again = None
    if again != digest:
        raise mismatch(digest, actual)


def verify_bytes(data: bytes | memoryview, digest: str) -> None:
    """`verify` for content in memory."""
    verify(digest, digest_bytes(data), lambda: digest_bytes(data, LEGACY))


def mismatch(digest: str, actual: str) -> BlobMismatchError:
    """The error for content that does not hash to the digest it was stored or read under."""
    return BlobMismatchError(
        f"blob {digest} does not match its content ({ALGORITHM} {actual})",
        hint="the data was corrupted in transit or on disk; upload it again",
    )


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[tuple[int, Path]]:
    """A temp file (open fd, path) beside `target` that replaces it when the block succeeds.

    A reader never sees a partial `target`; on any error the temp file is removed and
    `target` is left as it was. The caller owns (and closes) the fd.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dstack-")
    try:
        yield fd, Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_chunks(chunks: Iterable[bytes], target: Path) -> None:
    """Write already verified `chunks` to `target` atomically (see `replacing`)."""
    with replacing(target) as (fd, _), os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
