"""One runner per work dir: the runner holds an exclusive `flock` on `<work_dir>/runner.lock`
for its whole life, with its pid written in the file.

Two runners on one work dir would recover each other's jobs and share a credential. The lock
dies with its process (even `kill -9`), so a crashed runner never leaves a stale one behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from dstack.errors import ConfigError


class WorkDirLock:
    """The held lock; `release` (or the process's end) frees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> WorkDirLock:
        """Take the lock; `ConfigError` naming the holder's pid when another process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.path)
            raise ConfigError(
                f"another runner (pid {holder}) uses the work dir {self.path.parent}",
                hint="stop it, or start this runner with another --work-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_holder(path: Path) -> int | None:
    """The pid of the runner holding the lock of `path` (0: held, pid unknown yet), or None
    when nobody holds it."""
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
