"""Moving artifact files between a folder and a blob store: `push` and `place`.

Both run files through a thread pool (hashing, copying and HTTP release the GIL), in
batches of small files, so many small files go at disk speed rather than at one file (or one
pool task) per round trip. Neither fsyncs: see
`LocalBlobStore` for why that is safe for the store; placed files are re-placed on a retry.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dstack.errors import StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.paths import PathError, check_entry
from dstack.storage.base import (
    BlobMismatchError,
    BlobStore,
    SupportsAdopt,
    SupportsCopyIn,
    is_local,
    missing_of,
)
from dstack.storage.paths import (
    UnsafePathError,
    make_dirs,
    open_inside,
    real_folder,
    refuse_links,
)
from dstack.storage.statcache import StatCache

Progress = Callable[[int], None]
_ATTEMPTS = 3
_BATCH_FILES = 256
_BATCH_BYTES = 16 * 1024 * 1024
_SMALL = 256 * 1024
_T = TypeVar("_T")


@dataclass
class TransferStats:
    """What a transfer did: files/bytes that went, and those left alone (already there)."""

    files: int = 0
    bytes: int = 0
    skipped_files: int = 0
    skipped_bytes: int = 0

    def skip(self, entry: FileEntry) -> None:
        self.skipped_files += 1
        self.skipped_bytes += entry.size

    def add(self, entry: FileEntry) -> None:
        self.files += 1
        self.bytes += entry.size


def push(
    manifest: Manifest,
    root: Path,
    store: BlobStore,
    *,
    move: bool = False,
    within: Path | None = None,
    workers: int = 4,
    progress: Progress | None = None,
    stat_cache: StatCache | None = None,
) -> TransferStats:
    """Upload the blobs of `manifest` (files under `root`, its artifact root) that `store`
    lacks; blobs already stored are never sent again.

    Files are read as `scan` reads them: the root must not be a link (and must lie in
    `within` when given: `UnsafePathError`), and a file is read only when its real path is
    inside the root; one that is not (any more) counts as vanished.

    One `missing()` query for the whole manifest when the store offers it. `move=True` lets
    a store that can `adopt` take the files by rename (the folder is about to be deleted).
    `stat_cache` (the one `scan` used) lets unchanged files be copied without hashing them a
    second time. A file that changed since the scan is hashed again and stored under its new
    digest; a file that vanished is dropped. `manifest.files` is updated in place to say
    what was stored. `progress(n)` is called in the calling thread as each file's bytes land.
    """
    stats = TransferStats()
    lacking = set(missing_of(store, [entry.digest for entry in manifest.files]))
    groups: dict[str, list[FileEntry]] = {}
    for entry in manifest.files:
        if entry.digest in lacking:
            groups.setdefault(entry.digest, []).append(entry)
        else:
            stats.skip(entry)
    replaced: dict[str, FileEntry | None] = {}
    uploader = _Uploader(store, _real_root(root, within), move=move, stat_cache=stat_cache)
    batches = _batches(list(groups.values()), lambda group: group[0].size, local=is_local(store))
    with ThreadPoolExecutor(max(1, min(workers, len(batches)))) as pool:
        futures = [pool.submit(uploader.upload_batch, batch) for batch in batches]
        for future in as_completed(futures):
            tried, untried = future.result()
            for entry in untried:
                stats.skip(entry)
            for entry, stored in tried:
                if stored is not entry:
                    replaced[entry.path] = stored
                if stored is not None:
                    stats.add(stored)
                    if progress:
                        progress(stored.size)
    if replaced:
        manifest.files = _replace(manifest.files, replaced)
    return stats


Tried = list[tuple[FileEntry, FileEntry | None]]


def _real_root(root: Path, within: Path | None) -> tuple[Path, Path]:
    """(root, its real path); a root that is gone keeps its own path (nothing is read)."""
    try:
        return root, real_folder(root, within=within, what="artifact path")
    except (FileNotFoundError, NotADirectoryError):
        return root, Path(os.path.abspath(root))


class _Uploader:
    def __init__(
        self, store: BlobStore, root: tuple[Path, Path], *, move: bool, stat_cache: StatCache | None
    ) -> None:
        self._store = store
        self._root, self._real_root = root
        self._move = move
        self._cache = stat_cache

    def upload_batch(self, batch: list[list[FileEntry]]) -> tuple[Tried, list[FileEntry]]:
        """`upload_group` for each group of the batch, results joined."""
        tried: Tried = []
        untried: list[FileEntry] = []
        for group in batch:
            done, left = self.upload_group(group)
            tried += done
            untried += left
        return tried, untried

    def upload_group(self, group: list[FileEntry]) -> tuple[Tried, list[FileEntry]]:
        """Store one of the files sharing a digest; the next is tried when one turns out to
        have changed since the scan. Returns (tried: (entry, stored as), not needed)."""
        tried: Tried = []
        for index, entry in enumerate(group):
            stored = self.upload(entry, _file(self._root, entry))
            tried.append((entry, stored))
            if stored is entry:
                return tried, group[index + 1 :]
        return tried, []

    def upload(self, entry: FileEntry, file: str) -> FileEntry | None:
        """Store `file`; return the entry it was stored as (a new one when it changed since
        the scan), or None when it is gone (or is no longer a regular file inside the
        root: a link swapped in since the scan is never read through)."""
        for _ in range(_ATTEMPTS):
            try:
                with open_inside(file, self._real_root) as (source, st, real):
                    if st.st_size == entry.size and self._put(entry.digest, file, source, real, st):
                        return entry
                    fresh = self._rehash(entry, file, source, st)
            except FileNotFoundError:
                return None
            entry = fresh
        raise StorageError(
            f"artifact file {file} keeps changing while it is stored",
            hint="stop writing to it, or exclude it from the artifact paths",
        )

    def _put(self, digest: str, file: str, source: str, real: str, st: os.stat_result) -> bool:
        """Store the opened `source` (the file listed as `file`, really at `real`) as
        `digest`; False when its content no longer hashes to it."""
        vouched = self._cache is not None and self._cache.lookup(file, st) == digest
        try:
            if self._move and isinstance(self._store, SupportsAdopt):
                self._store.adopt(Path(real), digest, st if vouched else None)
            elif vouched and isinstance(self._store, SupportsCopyIn):
                self._store.copy_in(Path(source), digest, st)
            else:
                self._store.put_file(Path(source), digest)
        except BlobMismatchError:
            return False
        return True

    def _rehash(self, entry: FileEntry, file: str, source: str, st: os.stat_result) -> FileEntry:
        cache = self._cache if self._cache is not None else StatCache(None)
        digest = cache.digest(file, st, hasher=lambda _: cache.hash_file(source))
        return FileEntry(path=entry.path, size=st.st_size, mode=st.st_mode & 0o777, digest=digest)


def place(
    manifest: Manifest,
    target: Path,
    store: BlobStore,
    *,
    within: Path | None = None,
    workers: int = 4,
    progress: Progress | None = None,
    stat_cache: StatCache | None = None,
) -> TransferStats:
    """Write the files of `manifest` under `target` (its artifact root; for a single-file
    artifact, the file itself), creating folders and restoring modes.

    Every path is checked again here, whoever checked it before: an entry path must be
    normalized and relative, and no folder on the way from `target` to a file (nor, with
    `within`, from `within` to `target`) may be a symbolic link or a file: folders are made
    one name at a time and looked at with `lstat`, so nothing is written through a link
    (one from the job's code, or an earlier entry). `UnsafePathError` otherwise.

    Each file is a verified copy of its blob, written to a temp name and renamed: never a
    hard link, so a job writing to it cannot corrupt the store. A corrupt blob raises
    `StorageError` naming it; files placed before stay. A file already there with the same
    size and digest is left alone (its mode is restored). An entry whose path would leave
    `target` is refused. `progress(n)` is called in the calling thread per file placed.
    """
    stats = TransferStats()
    dests = [(entry, _dest(target, entry)) for entry in manifest.files]
    _make_root(target, within, single=any(entry.path == "" for entry in manifest.files))
    todo: list[tuple[FileEntry, Path]] = []
    for entry, dest in dests:
        if _already_there(dest, entry, stat_cache):
            stats.skip(entry)
        else:
            todo.append((entry, dest))
    _make_parents(target, (dest for _, dest in todo))
    batches = _batches(todo, lambda item: item[0].size, local=is_local(store))
    with ThreadPoolExecutor(max(1, min(workers, len(batches)))) as pool:
        futures = [pool.submit(_fetch_batch, store, batch) for batch in batches]
        for future in as_completed(futures):
            for entry in future.result():
                stats.add(entry)
                if progress:
                    progress(entry.size)
    return stats


def _fetch_batch(store: BlobStore, batch: list[tuple[FileEntry, Path]]) -> list[FileEntry]:
    for entry, dest in batch:
        _fetch(store, entry, dest)
    return [entry for entry, _ in batch]


def _fetch(store: BlobStore, entry: FileEntry, dest: Path) -> None:
    """The blob as `dest` (replaced atomically by `get_file`), with the entry's mode."""
    try:
        store.get_file(entry.digest, dest)
        os.chmod(dest, entry.mode)
    except OSError as exc:
        raise StorageError(
            f"cannot place {dest}: {exc.strerror}",
            hint="a file or folder in the way must be removed first",
        ) from exc


def _make_root(target: Path, within: Path | None, *, single: bool) -> None:
    """The folder files go into: `target` (or, for a single file, its parent), made from
    `within` down when given, else as it is (the caller chose it, as `dstack cp` does)."""
    folder = target.parent if single else target
    try:
        if within is not None:
            refuse_links(within, target, what="artifact path")
            make_dirs(within, folder, what=str(target))
        else:
            folder.mkdir(parents=True, exist_ok=True)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise StorageError(
            f"cannot place files in {folder}: {exc.strerror}",
            hint="a file in the way must be removed first",
        ) from exc


def _make_parents(target: Path, dests: Iterable[Path]) -> None:
    """Create each distinct parent folder once (not once per file), never through a link."""
    for parent in dict.fromkeys(dest.parent for dest in dests):
        if parent == target or parent == target.parent:
            continue
        try:
            make_dirs(target, parent, what=str(parent))
        except UnsafePathError:
            raise
        except OSError as exc:
            raise StorageError(
                f"cannot place files in {parent}: {exc.strerror}",
                hint="a file in the way must be removed first",
            ) from exc


def _batches(items: list[_T], size_of: Callable[[_T], int], *, local: bool) -> list[list[_T]]:
    """`items` in runs of up to `_BATCH_FILES` items or `_BATCH_BYTES` bytes, in order: a
    thread pool task per small file costs more than storing it, while a large file keeps
    a task to itself so large files still go in parallel.

    With a `local` store, every file under `_SMALL` goes in the first run, whatever their
    number: storing one is a few system calls and some Python, so threads would only take
    turns at the interpreter (10,000 files of 1 KiB moved into the store took 2-3x longer
    on four threads than on one); larger files, whose bytes are hashed and copied with the
    interpreter released, still go in parallel beside it."""
    batches: list[list[_T]] = []
    small: list[_T] = []
    current: list[_T] = []
    current_bytes = 0
    for item in items:
        size = size_of(item)
        if local and size < _SMALL:
            small.append(item)
            continue
        if current and (len(current) >= _BATCH_FILES or current_bytes + size > _BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        batches.append(current)
    return [small, *batches] if small else batches


def _already_there(dest: Path, entry: FileEntry, cache: StatCache | None) -> bool:
    try:
        st = dest.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    if (cache if cache is not None else StatCache(None)).digest(dest, st) != entry.digest:
        return False
    if st.st_mode & 0o777 != entry.mode:
        os.chmod(dest, entry.mode)
    return True


def _dest(target: Path, entry: FileEntry) -> Path:
    """Where an entry goes; refuses paths that would leave `target` (checked again: a
    manifest built in memory, as `dstack cp` does, was not validated)."""
    try:
        check_entry(entry.path)
    except PathError as exc:
        raise UnsafePathError(
            f"{exc}: it would leave its artifact folder",
            hint="the manifest is corrupt; upload the artifact again",
        ) from None
    return target.joinpath(*entry.path.split("/")) if entry.path else target


def _file(root: Path, entry: FileEntry) -> str:
    """The file of `entry` under `root`, as `scan` named it (a string: one per file)."""
    return f"{root}{os.sep}{entry.path}" if entry.path else str(root)


def _replace(files: list[FileEntry], replaced: dict[str, FileEntry | None]) -> list[FileEntry]:
    kept = (replaced.get(f.path, f) for f in files)
    return [f for f in kept if f is not None]
