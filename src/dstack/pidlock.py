"""`PidLock`: an exclusive `flock` a process holds for its whole life, with its pid written
in the file, so that others can tell who holds it (`lock_holder`).

The lock dies with its process (even `kill -9`), so a crashed holder never leaves a stale one
behind. One runner per work dir (`dstack.runner.lock`) and one local server per home
(`dstack.server.local_main`) are held this way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class PidLock:
    """The lock of `path`; `try_acquire` takes it, `release` (or the process's end) frees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock and write this process's pid in it; False when another holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_holder(path: Path) -> int | None:
    """The pid of the process holding the lock of `path` (0: held, pid not written yet), or
    None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(ValueError, OSError):
                return int(os.read(fd, 32).decode().strip() or "0")
            return 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
