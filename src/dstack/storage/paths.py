"""Filesystem checks for paths a job, a manifest or a request chose (the text is checked by
`dstack.models.paths`; here, what is on disk).

A folder that a job may change can hold symbolic links it planted. Whoever reads from it
(artifact sync) or writes into it (placing dependency artifacts, `dstack cp`) walks down
from a folder it trusts with `lstat`, one name at a time, and refuses a link anywhere on the
way: following one would read or write a file of the host outside that folder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from dstack.errors import StorageError

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(StorageError):
    """A path that would leave the folder it must stay in (a link on the way, or `..`)."""


def refuse_links(base: Path, path: Path, *, what: str) -> None:
    """Raise `UnsafePathError` when a name between `base` (trusted, not checked) and `path`
    is a symbolic link, or when `path` is not under `base`. Names that do not exist yet are
    fine: nothing can be read through them, and whoever creates them checks again."""
    try:
        rel = path.relative_to(base)
    except ValueError:
        raise _outside(what, path, base) from None
    current = base
    for name in rel.parts:
        if name in ("..", "."):
            raise _outside(what, path, base)
        current = current / name
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"{what} {current} is a symbolic link; dstack does not follow it",
                hint="write the files themselves there, not a link to them",
            )


def make_dirs(base: Path, folder: Path, *, what: str) -> None:
    """Create `folder` and the folders between it and `base` (which must exist), one name
    at a time, refusing any name that is a link or a file (`UnsafePathError`)."""
    refuse_links(base, folder, what=what)
    current = base
    for name in folder.relative_to(base).parts:
        current = current / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"
            raise UnsafePathError(
                f"cannot place {what}: {current} is {kind}, not a folder",
                hint="remove it, or place the artifact somewhere else",
            )


def real_under(path: Path | str, folder: Path | str) -> bool:
    """True when the real path `path` is `folder` or inside it (both real paths)."""
    path, folder = str(path), str(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def real_folder(root: Path, *, within: Path | None, what: str) -> Path:
    """The real path of `root`, which must not be a link itself and, with `within`, must
    lie inside `within`'s real path (`UnsafePathError` otherwise)."""
    if stat.S_ISLNK(os.lstat(root).st_mode):
        raise UnsafePathError(
            f"{what} {root} is a symbolic link; dstack does not follow it",
            hint="write the files themselves there, not a link to them",
        )
    real = Path(os.path.realpath(root))
    if within is not None and not real_under(real, os.path.realpath(within)):
        raise _outside(what, root, within)
    return real


@contextlib.contextmanager
def open_inside(
    path: Path | str, root: Path, expected: os.stat_result | None = None
) -> Iterator[tuple[str, os.stat_result, str]]:
    """Open the regular file `path` (or the file a link there points to) for reading, only
    when its real path is inside `root` (a real path). Yields (a path that reopens exactly
    that file, its stat, its real path).

    The check holds for the file actually opened: the last name is opened with
    `O_NOFOLLOW`, and the kernel's own name of the open file (`/proc/self/fd/N`) is
    checked, so a link swapped in anywhere on the way after the check is caught. With
    `expected`, the file must also be the one that was listed (device, inode). A file that
    is gone, changed, not regular or outside `root` raises `FileNotFoundError`: callers skip
    it as a file that vanished.
    """
    fd = _open_file(path, root)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _same_file(st, expected):
            raise FileNotFoundError(errno.ENOENT, "changed while it was read", str(path))
        proc = f"/proc/self/fd/{fd}"
        real = os.readlink(proc) if _has_proc() else os.path.realpath(path)
        if not real_under(real, root):
            raise FileNotFoundError(errno.ENOENT, "moved out of the artifact folder", real)
        yield (proc if _has_proc() else real), st, real
    finally:
        os.close(fd)


def _open_file(path: Path | str, root: Path) -> int:
    """A read-only fd of `path`, its last name not followed. Where the kernel names open
    files (Linux), the path is opened as it is and the caller checks the kernel's name of
    it (one `open`, not an `lstat` per name); a last name that is a link is resolved first
    and followed only into `root`. Elsewhere the real path is checked before opening.
    `O_NONBLOCK`: a FIFO swapped in never blocks the open."""
    flags = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW
    try:
        if _has_proc():
            try:
                return os.open(path, flags)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
        return os.open(_real_inside(path, root), flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path)) from exc
        raise


def _real_inside(path: Path | str, root: Path) -> str:
    real = os.path.realpath(path)
    if not real_under(real, root):
        raise FileNotFoundError(errno.ENOENT, "outside the artifact folder", str(path))
    return real


@functools.cache
def _has_proc() -> bool:
    """Linux names every open file under /proc/self/fd (elsewhere only the realpath check
    before opening holds)."""
    return os.path.isdir("/proc/self/fd")


def _same_file(st: os.stat_result, expected: os.stat_result | None) -> bool:
    return expected is None or (st.st_dev, st.st_ino) == (expected.st_dev, expected.st_ino)


def _outside(what: str, path: Path, base: Path) -> UnsafePathError:
    return UnsafePathError(
        f"{what} {path} is outside {base}",
        hint="use a path inside the job's folder, without '..'",
    )
