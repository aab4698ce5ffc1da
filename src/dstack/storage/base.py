"""The blob store: content-addressed bytes (sha256), nothing else.

Implementations: `LocalBlobStore` (a folder), `MemoryBlobStore` (tests), S3 later. One contract
suite (`tests/storage/test_blobstore_contract.py`) runs against each.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from dstack.errors import StorageError

CHUNK_SIZE = 1024 * 1024
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore(Protocol):
    def exists(self, digest: str) -> bool:
        """True when the blob is stored. Never blocks on other writers."""

    def put_file(self, path: Path, digest: str) -> None:
        """Store the file's bytes under `digest` (hex sha256).

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

    def delete(self, digest: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    def list_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order."""


def check_digest(digest: str) -> str:
    """Return `digest` if it is a lower-case hex sha256, else raise `StorageError`."""
    if not _DIGEST_RE.match(digest):
        raise StorageError(
            f"'{digest}' is not a sha256 digest", hint="use 64 lower-case hex characters"
        )
    return digest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(digest: str, actual: str) -> StorageError:
    """The error for content that does not hash to the digest it was stored or read under."""
    return StorageError(
        f"blob {digest} does not match its content (sha256 {actual})",
        hint="the data was corrupted in transit or on disk; upload it again",
    )
