"""`scan`: what an artifact path holds right now, as a `Manifest`.

Rules, so that what a job leaves behind is stored the same way everywhere:

- A folder is walked recursively; entries are its regular files, sorted by path, with
  `mode = st_mode & 0o777`. Empty folders are not recorded (a manifest lists files).
- A single file is one entry with path "".
- A missing path is a manifest with no files (the job wrote nothing there yet).
- The artifact root itself must not be a symbolic link (`UnsafePathError`), and with
  `within` its real path must lie inside that folder (the job's directory).
- Symbolic links inside: a link to a regular file whose real path lies inside the artifact
  root is stored as that file's content, under the link's name (so a Hugging Face cache,
  whose snapshots link to its blobs, keeps working). Links pointing anywhere else, dangling
  links and links to folders are skipped: a job must not be able to make the runner upload
  files of the host it runs on, and folder links could form cycles.
- Every file is read through `open_inside`: what is read is checked to be the file that was
  listed, inside the root, even if the job swaps a link in meanwhile.
- Names that are not valid entry paths (a backslash or a control character) are skipped
  with a warning in the runner's log.
- Files that vanish while the walk runs are skipped.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from dstack.errors import StorageError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.paths import PathError, check_entry
from dstack.storage.paths import open_inside, real_folder, real_under
from dstack.storage.statcache import StatCache

log = logging.getLogger(__name__)

Ingest = Callable[[Path | str, os.stat_result], str]
"""Reads a file whose stat is the one given, stores it and returns its digest
(`LocalBlobStore.ingest`)."""

Listed = tuple[str, str, os.stat_result]
"""(entry path, the file as listed (a link's own path for a followed link), its stat). Paths
are strings here: a `Path` per file costs more than the rest of listing it."""


def scan(
    root: Path,
    artifact_path: str,
    *,
    within: Path | None = None,
    stat_cache: StatCache | None = None,
    ingest: Ingest | None = None,
) -> Manifest:
    """The manifest of `root` (the host folder or file of the declared `artifact_path`).

    `within`: the folder the root's real path must be in (see the module docstring).
    Digests come from `stat_cache` when given (unchanged files are not read again), else
    are computed: by `ingest` when given, which stores each file it hashes in the same read
    (a later `push` then finds its blob there), else by hashing.
    """
    cache = stat_cache if stat_cache is not None else StatCache(None)
    try:
        real = real_folder(root, within=within, what=f"artifact path '{artifact_path}':")
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return Manifest(path=artifact_path)
    if stat.S_ISREG(st.st_mode):
        entry = _entry(("", str(root), st), real, cache, ingest)
        return Manifest(path=artifact_path, files=[entry] if entry else [])
    if not stat.S_ISDIR(st.st_mode):
        return Manifest(path=artifact_path)
    found = (_entry(listed, real, cache, ingest) for listed in _walk(str(root), "", real))
    files = [entry for entry in found if entry is not None]
    files.sort(key=lambda entry: entry.path)
    return Manifest(path=artifact_path, files=files)


def _walk(folder: str, prefix: str, real_root: Path) -> list[Listed]:
    """(relative path, file, stat) of every file to record under `folder`."""
    found: list[Listed] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        path = entry.path
        if not _valid_name(rel):
            continue
        try:
            if entry.is_symlink():
                st = _followed_link(path, real_root)
                if st is not None:
                    found.append((rel, path, st))
            elif entry.is_dir(follow_symlinks=False):
                found.extend(_walk(path, rel + "/", real_root))
            elif entry.is_file(follow_symlinks=False):
                found.append((rel, path, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue
    return found


def _valid_name(rel: str) -> bool:
    try:
        check_entry(rel)
    except PathError as exc:
        log.warning("skipping an artifact file: %s", exc)
        return False
    return True


def _followed_link(link: str, real_root: Path) -> os.stat_result | None:
    """The stat of the regular file `link` points to, if it may be followed."""
    target = os.path.realpath(link)
    if not real_under(target, real_root):
        return None
    try:
        st = os.stat(target)
    except OSError:  # dangling, or a loop of links
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _entry(
    listed: Listed, real_root: Path, cache: StatCache, ingest: Ingest | None
) -> FileEntry | None:
    """The entry of one file; None when it vanished (or changed) since it was listed."""
    rel, file, st = listed

    def hasher(_: Path | str) -> str:
        with open_inside(file, real_root, st) as (source, _st, _real):
            return ingest(source, st) if ingest is not None else cache.hash_file(source)

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
