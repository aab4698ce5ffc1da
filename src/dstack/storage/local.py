"""`LocalBlobStore`: blobs as files in a folder, sharded by the first two hex digits."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from dstack.errors import NotFoundError, StorageError
from dstack.models.artifacts import StorageAccess
from dstack.models.digests import LEGACY, digest_bytes, digest_fd, new_hasher
from dstack.storage.base import CHUNK_SIZE, check_digest, hash_file, replacing, verify, verify_bytes
from dstack.storage.copying import copy_hashing, copy_range, copy_verified, hash_fd

BLOB_MODE = 0o400
DIR_MODE = 0o700


class LocalBlobStore:
    """Blobs under `root/ab/cdef...`; writes go to `root/tmp/` first and are renamed in.

    Renames within one filesystem are atomic, so readers see a whole blob or none. Stored
    files are read-only (0400) so a job cannot corrupt them through a stray hard link, and
    owned by the store's user (a file adopted from a job that ran as another user is
    `chown`ed); the folders the store creates are 0700: nobody else on the machine reads it.
    Nothing is fsync'ed: after a power loss a blob may be truncated, which every read
    detects (digest check) and names; the runner re-syncs artifacts, so durability is
    traded for speed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._prefix = str(root) + os.sep
        # Unique temp names without mkstemp's random retries: pid + a counter (thread-safe
        # in CPython); two processes sharing the store differ by pid.
        self._counter = itertools.count()
        self._access: StorageAccess | None = None

    def direct_access(self) -> StorageAccess:
        """Runners on this machine read and write the folder in place (`SupportsDirectAccess`)."""
        if self._access is None:  # the root does not move: one `realpath` for every claim
            self._access = StorageAccess(kind="local", path=str(self.root.resolve()))
        return self._access

    def path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it exists)."""
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self._where(check_digest(digest)))

    def missing(self, digests: list[str]) -> list[str]:
        """The distinct digests (in the order given) that are not stored: one `stat` each,
        on string paths (this runs for every file of every manifest pushed)."""
        unique = [check_digest(d) for d in dict.fromkeys(digests)]
        return [d for d in unique if not os.path.isfile(self._where(d))]

    def _where(self, digest: str) -> str:
        """`path(digest)` as a string, for a digest already checked (cheap: per file)."""
        return f"{self._prefix}{digest[:2]}{os.sep}{digest[2:]}"

    def put_file(self, path: Path, digest: str) -> None:
        if self.exists(digest):
            return
        try:
            with path.open("rb", buffering=0) as source:
                self._write(source.fileno(), digest)
        except OSError as exc:
            raise StorageError(f"cannot store {path} as blob {digest}: {exc.strerror}") from exc

    def put_bytes(self, data: bytes, digest: str) -> None:
        if self.exists(digest):
            return
        verify_bytes(data, digest)
        self._save(data, digest)

    def ingest(self, path: Path | str, expected: os.stat_result | None = None) -> tuple[str, bool]:
        """Store `path`, reading the file once: it is hashed while it is copied (a small
        file is hashed first and written only when missing). Returns (digest of what was
        read, whether a new blob was stored).

        The blob is stored only when the file's stat (size, mtime, inode) stayed the same
        while it was read, and equals `expected` when given; otherwise nothing is stored
        (the file is being written: `push` stores it later, verified). Reading `path` fails
        with the `OSError` of the file (missing, unreadable); writing the store fails with
        `StorageError`.
        """
        with open(path, "rb", buffering=0) as source:
            fd = source.fileno()
            before = os.fstat(fd)
            if before.st_size < CHUNK_SIZE:
                return self._ingest_small(fd, before, expected)
            try:
                return self._ingest_large(fd, before, expected)
            except OSError as exc:
                raise StorageError(f"cannot store {path} as a blob: {exc.strerror}") from exc

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
        the file has no other hard link, else copy); the blob is made read-only.

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
        return self._verified_chunks(file, digest, self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    def get_file(self, digest: str, target: Path) -> None:
        """See `BlobStore.get_file`. The kernel copies the blob while this thread hashes it
        (a stored blob never changes, so both read the same bytes)."""
        source = self._open(digest)
        with replacing(target) as (fd, _):
            try:
                with source:
                    size = os.fstat(source.fileno()).st_size
                    actual = copy_verified(source.fileno(), fd, size)
            finally:
                os.close(fd)
            verify(digest, actual, lambda: hash_file(self.path(digest), LEGACY))

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

    def stored_at(self, digest: str) -> datetime | None:
        """When the blob was stored: the later of its file's mtime and ctime (a blob adopted
        by hard link keeps the job file's old mtime; linking and the chmod that makes it
        read-only update ctime). None when it is missing."""
        try:
            stat = os.stat(self._where(check_digest(digest)))
        except FileNotFoundError:
            return None
        return datetime.fromtimestamp(max(stat.st_mtime, stat.st_ctime), UTC)

    def close(self) -> None:
        """Nothing to release: the store holds no open files between calls."""

    def _open(self, digest: str) -> BinaryIO:
        try:
            return self.path(digest).open("rb", buffering=0)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    @staticmethod
    def _verified_chunks(file: BinaryIO, digest: str, path: Path) -> Iterator[bytes]:
        hasher = new_hasher()
        with file:
            while chunk := file.read(CHUNK_SIZE):
                hasher.update(chunk)
                yield chunk
        verify(digest, hasher.hexdigest(), lambda: hash_file(path, LEGACY))

    def _temp(self) -> tuple[int, str]:
        """A new temp file in the store: (fd open for writing and reading, path). The temp
        folder is made when it is missing (first use, or the store was emptied)."""
        name = f"{self._tmp}{os.sep}{os.getpid()}-{next(self._counter)}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(name, flags, 0o600), name
        except FileNotFoundError:
            _make_dir(self._tmp)
            return os.open(name, flags, 0o600), name

    def _write(self, source_fd: int, digest: str) -> None:
        """Copy `source_fd` into a temp file while hashing, then rename it into place."""
        fd, tmp = self._temp()
        try:
            try:
                actual, _ = copy_hashing(source_fd, fd)
            finally:
                os.close(fd)
            verify(digest, actual, lambda: hash_file(Path(tmp), LEGACY))
            self._commit(tmp, digest)
        finally:
            _discard(tmp)

    def _save(self, data: bytes, digest: str) -> None:
        """Write already hashed bytes as blob `digest`."""
        fd, tmp = self._temp()
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            self._commit(tmp, digest)
        finally:
            _discard(tmp)

    def _ingest_small(
        self, fd: int, before: os.stat_result, expected: os.stat_result | None
    ) -> tuple[str, bool]:
        chunks = []
        while chunk := os.read(fd, CHUNK_SIZE):
            chunks.append(chunk)
        data = b"".join(chunks)
        digest = digest_bytes(data)
        if not _stable(expected, before, os.fstat(fd)) or self.exists(digest):
            return digest, False
        try:
            self._save(data, digest)
        except OSError as exc:
            raise StorageError(f"cannot store blob {digest}: {exc.strerror}") from exc
        return digest, True

    def _ingest_large(
        self, fd: int, before: os.stat_result, expected: os.stat_result | None
    ) -> tuple[str, bool]:
        out, tmp = self._temp()
        try:
            try:
                digest, _ = copy_hashing(fd, out)
            finally:
                os.close(out)
            if not _stable(expected, before, os.fstat(fd)) or self.exists(digest):
                return digest, False
            self._commit(tmp, digest)
            return digest, True
        finally:
            _discard(tmp)

    def _copy_in(self, path: Path, digest: str, expected: os.stat_result) -> None:
        fd, tmp = self._temp()
        try:
            with path.open("rb", buffering=0) as source:
                try:
                    before = os.fstat(source.fileno())
                    copy_range(source.fileno(), fd, before.st_size)
                    after = os.fstat(source.fileno())
                finally:
                    os.close(fd)
            if not (_same(expected, before) and _same(before, after)):
                self._verify(tmp, digest)
            self._commit(tmp, digest)
        finally:
            _discard(tmp)

    def _adopt(self, path: Path, digest: str, expected: os.stat_result | None) -> None:
        if self.exists(digest):
            os.unlink(path)
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._copy_then_unlink(path, digest)  # a link: its content is copied
            return
        try:
            st = os.fstat(fd)
            if st.st_nlink > 1 or not stat.S_ISREG(st.st_mode):
                # Renaming would leave another hard link, writable, pointing at the stored
                # blob (or would move a device or FIFO).
                self._copy_then_unlink(path, digest)
                return
            if expected is None or not _same(expected, st):
                _verify_fd(fd, digest)  # on a mismatch the file stays where it is
            # Owner and mode are set on the open file before its name is in the store: a
            # job's user must not own (so chmod) a blob; a link swapped in meanwhile is
            # never followed.
            if st.st_uid != os.geteuid():
                os.fchown(fd, os.geteuid(), os.getegid())
            os.fchmod(fd, BLOB_MODE)
            final = self._where(digest)
            try:
                self._rename_in(path, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy_then_unlink(path, digest)
                return
            if os.lstat(final).st_ino != st.st_ino or os.fstat(fd).st_nlink > 1:
                # Another file was swapped in before the rename, or a link was made to it:
                # it goes back and is stored as a verified copy.
                os.rename(final, path)
                self._copy_then_unlink(path, digest)
        finally:
            os.close(fd)

    def _copy_then_unlink(self, path: Path, digest: str) -> None:
        self.put_file(path, digest)
        path.unlink()

    @staticmethod
    def _verify(file: str, digest: str) -> None:
        fd = os.open(file, os.O_RDONLY)
        try:
            _verify_fd(fd, digest)
        finally:
            os.close(fd)

    def _commit(self, tmp: str, digest: str) -> None:
        os.chmod(tmp, BLOB_MODE)
        self._rename_in(tmp, self._where(check_digest(digest)))

    @staticmethod
    def _rename_in(source: Path | str, final: str) -> None:
        try:
            os.replace(source, final)
        except FileNotFoundError:  # the shard folder is new (or the store was emptied)
            _make_dir(Path(final).parent)
            os.replace(source, final)


def _verify_fd(fd: int, digest: str) -> None:
    """`BlobMismatchError` unless the open file's content is `digest`."""
    verify(digest, hash_fd(fd), lambda: digest_fd(fd, LEGACY))


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)


def _stable(expected: os.stat_result | None, before: os.stat_result, after: os.stat_result) -> bool:
    """True when a file read between `before` and `after` did not change meanwhile."""
    return (expected is None or _same(expected, before)) and _same(before, after)


def _make_dir(path: Path) -> None:
    """Create `path` (and its missing parents), 0700; one `mkdir` call when only the last
    part is new or it already exists (the common cases: this runs per stored file)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_dir(path.parent)
        _make_dir(path)


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
