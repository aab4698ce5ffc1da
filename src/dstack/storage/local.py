"""`LocalBlobStore`: blobs as files in a folder, sharded by the first two hex digits."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dstack.errors import NotFoundError, StorageError
from dstack.storage.base import CHUNK_SIZE, check_digest, mismatch, replacing, sha256_file
from dstack.storage.copying import copy_hashing, copy_range


class LocalBlobStore:
    """Blobs under `root/ab/cdef...`; writes go to `root/tmp/` first and are renamed in.

    Renames within one filesystem are atomic, so readers see a whole blob or none. Stored
    files are read-only so a job cannot corrupt them through a stray hard link. Nothing is
    fsync'ed: after a power loss a blob may be truncated, which every read detects (digest
    check) and names; the runner re-syncs artifacts, so durability is traded for speed.
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

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) that are not stored."""
        return [d for d in dict.fromkeys(digests) if not self.exists(d)]

    def put_file(self, path: Path, digest: str) -> None:
        if self.exists(digest):
            return
        try:
            with path.open("rb", buffering=0) as source:
                self._write(source, digest)
        except OSError as exc:
            raise StorageError(f"cannot store {path} as blob {digest}: {exc.strerror}") from exc

    def put_bytes(self, data: bytes, digest: str) -> None:
        if not self.exists(digest):
            self._write(io.BytesIO(data), digest)

    def copy_in(self, path: Path, digest: str, expected: os.stat_result) -> None:
        """Store `path` as `digest` without hashing it again.

        The caller hashed the file when its stat was `expected` (size, mtime_ns, inode, as a
        `StatCache` remembers it). The bytes are copied inside the kernel; if the file's stat
        differs from `expected` before or after the copy, the copy is hashed and verified as
        `put_file` does (`BlobMismatchError` when it no longer matches).
        """
        if self.exists(digest):
            return
        try:
            self._copy_in(path, digest, expected)
        except OSError as exc:
            raise StorageError(f"cannot store {path} as blob {digest}: {exc.strerror}") from exc

    def adopt(self, path: Path, digest: str, expected: os.stat_result | None = None) -> None:
        """Move `path` into the store as `digest` (rename when on the same filesystem and
        the file has no other hard link, else copy); the blob is made 0o444.

        Verified by hashing, unless the caller vouches for the digest with `expected` (the
        stat it hashed the file in, as for `copy_in`) and the moved file still has it. On a
        mismatch (`BlobMismatchError`) the file is put back where it was. When the blob is
        already stored, `path` is removed. A symbolic link is copied through, then removed.
        """
        try:
            self._adopt(path, digest, expected)
        except OSError as exc:
            raise StorageError(f"cannot store {path} as blob {digest}: {exc.strerror}") from exc

    def open(self, digest: str) -> Iterator[bytes]:
        file = self._open(digest)
        return self._verified_chunks(file, digest)

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    def get_file(self, digest: str, target: Path) -> None:
        source = self._open(digest)
        with replacing(target) as (fd, _):
            with source, os.fdopen(fd, "wb", buffering=0) as out:
                actual, _ = copy_hashing(source, out)
            if actual != digest:
                raise mismatch(digest, actual)

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
            return self.path(digest).open("rb", buffering=0)
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

    def _temp(self) -> tuple[int, str]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=self._tmp)

    def _write(self, source: BinaryIO, digest: str) -> None:
        """Copy `source` into a temp file while hashing, then rename it into place."""
        fd, tmp = self._temp()
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                actual, _ = copy_hashing(source, out)
            if actual != digest:
                raise mismatch(digest, actual)
            self._commit(tmp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _copy_in(self, path: Path, digest: str, expected: os.stat_result) -> None:
        fd, tmp = self._temp()
        try:
            with path.open("rb", buffering=0) as source, os.fdopen(fd, "wb", buffering=0) as out:
                before = os.fstat(source.fileno())
                copy_range(source.fileno(), out.fileno(), before.st_size)
                after = os.fstat(source.fileno())
            if not (_same(expected, before) and _same(before, after)):
                self._verify(Path(tmp), digest)
            self._commit(tmp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _adopt(self, path: Path, digest: str, expected: os.stat_result | None) -> None:
        if self.exists(digest):
            path.unlink()
            return
        st = path.lstat()
        if st.st_nlink > 1 or not stat.S_ISREG(st.st_mode):
            # Renaming would leave another hard link, writable, pointing at the stored blob
            # (or would move a symbolic link instead of the content).
            self.put_file(path, digest)
            path.unlink()
            return
        fd, tmp = self._temp()
        os.close(fd)
        try:
            os.rename(path, tmp)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            os.unlink(tmp)
            self.put_file(path, digest)
            path.unlink()
            return
        if expected is None or not _same(expected, os.stat(tmp)):
            self._verify_adopted(path, tmp, digest)
        self._commit(tmp, digest)

    def _verify_adopted(self, original: Path, tmp: str, digest: str) -> None:
        try:
            self._verify(Path(tmp), digest)
        except StorageError:
            os.rename(tmp, original)
            raise

    @staticmethod
    def _verify(file: Path, digest: str) -> None:
        actual = sha256_file(file)
        if actual != digest:
            raise mismatch(digest, actual)

    def _commit(self, tmp: str, digest: str) -> None:
        os.chmod(tmp, 0o444)
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)
