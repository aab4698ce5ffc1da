"""One runner per work dir: the runner holds an exclusive `flock` on `<work_dir>/runner.lock`
for its whole life, with its pid written in the file (`dstack.pidlock`).

Two runners on one work dir would recover each other's jobs and share a credential. The lock
dies with its process (even `kill -9`), so a crashed runner never leaves a stale one behind.
"""

from __future__ import annotations

from dstack.errors import ConfigError
from dstack.pidlock import PidLock, lock_holder

__all__ = ["WorkDirLock", "lock_holder"]


class WorkDirLock(PidLock):
    """The held lock; `release` (or the process's end) frees it."""

    def acquire(self) -> WorkDirLock:
        """Take the lock; `ConfigError` naming the holder's pid when another process has it."""
        if not self.try_acquire():
            raise ConfigError(
                f"another runner (pid {lock_holder(self.path)}) uses the work dir"
                f" {self.path.parent}",
                hint="stop it, or start this runner with another --work-dir",
            )
        return self
