"""`scan`: what an artifact path holds right now, as a `Manifest`.

Rules, so that what a job leaves behind is stored the same way everywhere:

- A folder is walked recursively; entries are its regular files, sorted by path, with
  `mode = st_mode & 0o777`. Empty folders are not recorded (a manifest lists files).
- A single file is one entry with path "".
- A missing path is a manifest with no files (the job wrote nothing there yet).
- Symbolic links: a link to a regular file that lies inside the artifact root or inside
  `base` (the job's working directory) is stored as that file's content, under the link's
  name. Links pointing anywhere else, dangling links and links to folders are skipped: a
  job must not be able to make the runner upload files of the host it runs on, and folder
  links could form cycles.
- Files that vanish while the walk runs are skipped.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path

from dstack.errors import StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.storage.statcache import StatCache

Ingest = Callable[[Path, os.stat_result], str]
"""Reads a file whose stat is the one given, stores it and returns its digest
(`LocalBlobStore.ingest`)."""


def scan(
    root: Path,
    artifact_path: str,
    *,
    base: Path,
    stat_cache: StatCache | None = None,
    ingest: Ingest | None = None,
) -> Manifest:
    """The manifest of `root` (the resolved folder or file of the declared `artifact_path`).

    `base` bounds where symbolic links may point (see the module docstring). Digests come
    from `stat_cache` when given (unchanged files are not read again), else are computed:
    by `ingest` when given, which stores each file it hashes in the same read (a later
    `push` then finds its blob there), else by hashing.
    """
    cache = stat_cache if stat_cache is not None else StatCache(None)
    allowed = _Bounds(root, base)
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        return Manifest(path=artifact_path)
    if stat.S_ISREG(st.st_mode):
        entry = _entry("", root, st, cache, ingest)
        return Manifest(path=artifact_path, files=[entry] if entry else [])
    if not stat.S_ISDIR(st.st_mode):
        return Manifest(path=artifact_path)
    walked = _walk(root, "", allowed)
    found = (_entry(rel, file, fst, cache, ingest) for rel, file, fst in walked)
    files = [entry for entry in found if entry is not None]
    files.sort(key=lambda entry: entry.path)
    return Manifest(path=artifact_path, files=files)


class _Bounds:
    """The folders a followed symbolic link may resolve into."""

    def __init__(self, root: Path, base: Path) -> None:
        self._roots = [root.resolve(), base.resolve()]

    def allows(self, target: Path) -> bool:
        return any(target.is_relative_to(r) for r in self._roots)


def _walk(folder: Path, prefix: str, bounds: _Bounds) -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, file, stat) of every file to record under `folder`."""
    found: list[tuple[str, Path, os.stat_result]] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                st = _followed_link(path, bounds)
                if st is not None:
                    found.append((rel, path, st))
            elif entry.is_dir(follow_symlinks=False):
                found.extend(_walk(path, rel + "/", bounds))
            elif entry.is_file(follow_symlinks=False):
                found.append((rel, path, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue
    return found


def _followed_link(link: Path, bounds: _Bounds) -> os.stat_result | None:
    """The stat of the regular file `link` points to, if it may be followed."""
    try:
        target = link.resolve(strict=True)
        st = os.stat(target)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        return None
    if not stat.S_ISREG(st.st_mode) or not bounds.allows(target):
        return None
    return st


def _entry(
    rel: str, file: Path, st: os.stat_result, cache: StatCache, ingest: Ingest | None
) -> FileEntry | None:
    """The entry of one file; None when it vanished since it was listed."""
    hasher = None if ingest is None else functools.partial(_ingest_as, ingest, st)
    try:
        digest = cache.digest(file, st, hasher=hasher)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(
            f"cannot read artifact file {file}: {exc.strerror}",
            hint="make the job leave its artifact files readable",
        ) from exc
    return FileEntry(path=rel, size=st.st_size, mode=st.st_mode & 0o777, digest=digest)


def _ingest_as(ingest: Ingest, st: os.stat_result, file: Path) -> str:
    return ingest(file, st)
