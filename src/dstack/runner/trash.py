"""Finished jobs' folders leave the next job's way: renamed into a trash folder at once (one
`rename`), removed by a thread of their own once no job ended for a moment.

Removing a job's folder (its code, its venv, its logs: a few hundred files) took 30-80 ms on
a loaded machine, on the worker's thread right after the final status, while the next job
of the same runner was being checked out and started: both then waited for the disk and
for each other. The trash is emptied when jobs stop ending for `settle` seconds, and when
the runner starts (what an earlier run left there); a folder that cannot be renamed (another
file system) is removed at once, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Trash:
    def __init__(self, root: Path, *, settle: float = 1.0) -> None:
        self.root = root
        self._settle = settle
        self._came = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, folder: Path) -> None:
        """Remove `folder` (soon); missing already is fine."""
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)  # job users must not list it
            os.rename(folder, self.root / folder.name)
        except FileNotFoundError:
            return
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            return
        self._wake()

    def empty_later(self) -> None:
        """Empty what an earlier run left in the trash, if anything (on the trash's thread)."""
        if self.root.is_dir() and any(self.root.iterdir()):
            self._wake()

    def empty(self) -> None:
        """Remove everything in the trash now."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def _wake(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="trash", daemon=True)
                self._thread.start()
        self._came.set()

    def _loop(self) -> None:
        while True:
            self._came.wait()  # no timer while nothing comes
            self._came.clear()
            while self._came.wait(self._settle):  # until jobs stop ending for a moment
                self._came.clear()
            try:
                self.empty()
            except Exception:  # the trash must not die of one folder
                log.exception("emptying %s failed", self.root)
