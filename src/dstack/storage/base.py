"""The blob store: content-addressed bytes (sha256), nothing else.

Implementations: `LocalBlobStore` (a folder), `MemoryBlobStore` (tests), S3 later. One contract
suite (`tests/storage/test_blobstore_contract.py`) runs against each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


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
        """Yield the blob's bytes in chunks. Missing: `NotFoundError`."""

    def get_file(self, digest: str, target: Path) -> None:
        """Write the blob to `target` (replacing it atomically), verified against `digest`.

        Missing: `NotFoundError`; corrupt: `StorageError` naming the digest, target untouched.
        """

    def delete(self, digest: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    def list_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order."""
