"""`LocalBlobStore`: blobs as files in a folder, sharded by the first two hex digits."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dstack.errors import NotFoundError, StorageError
from dstack.storage.base import CHUNK_SIZE, check_digest, mismatch


class LocalBlobStore:
    """Blobs under `root/ab/cdef...`; writes go to `root/tmp/` first and are renamed in.

    Renames within one filesystem are atomic, so readers see a whole blob or none. Stored
    files are read-only so a job cannot corrupt them through a stray hard link.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"

    def path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it exists)."""
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_file(self, path: Path, digest: str) -> None:
        if self.exists(digest):
            return
        try:
            with path.open("rb") as source:
                self._write(source, digest)
        except OSError as exc:
            raise StorageError(f"cannot store {path} as blob {digest}: {exc.strerror}") from exc

    def put_bytes(self, data: bytes, digest: str) -> None:
        import io

        if not self.exists(digest):
            self._write(io.BytesIO(data), digest)

    def open(self, digest: str) -> Iterator[bytes]:
        file = self._open(digest)
        return self._verified_chunks(file, digest)

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    def get_file(self, digest: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dstack-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.open(digest):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def list_digests(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for shard in self.root.iterdir():
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for blob in shard.iterdir():
                if not blob.name.startswith("."):
                    yield shard.name + blob.name

    def _open(self, digest: str) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    @staticmethod
    def _verified_chunks(file: BinaryIO, digest: str) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        with file:
            while chunk := file.read(CHUNK_SIZE):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise mismatch(digest, hasher.hexdigest())

    def _write(self, source: BinaryIO, digest: str) -> None:
        """Copy `source` into a temp file while hashing, then rename it into place."""
        final = self.path(digest)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != digest:
                raise mismatch(digest, hasher.hexdigest())
            os.chmod(tmp, 0o444)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
