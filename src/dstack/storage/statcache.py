"""`StatCache`: remembers file digests so unchanged files are never read twice.

Keyed like git's index: (path, size, mtime_ns, inode). A file whose mtime is within
`RACY_NS` of the moment its hashing began is not remembered ("racily clean", as git calls
it): a later write in the same timestamp tick could keep size and mtime, so its digest is
computed again next time instead of being trusted. `settle()` lifts that rule once the
writers are known to be gone (a finished job), so the final sync hashes each file once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dstack.models.digests import ALGORITHM
from dstack.storage.base import hash_file

RACY_NS = 100_000_000  # 0.1 s: well above the coarsest kernel timestamp tick (10 ms)
_VERSION = 1

Key = tuple[int, int, int]  # size, mtime_ns, inode


class StatCache:
    """Digest memo keyed by (path, size, mtime_ns, inode), persisted as one JSON file.

    The file records the digest algorithm (`dstack.models.digests.ALGORITHM`): a memo of
    another algorithm's digests is dropped. Thread-safe. `hasher` computes a digest when the
    memo has none (injectable for tests).
    """

    def __init__(
        self, path: Path | None, *, hasher: Callable[[Path | str], str] = hash_file
    ) -> None:
        self.path = path
        self._hasher = hasher
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Key, str]] = self._load() if path else {}
        self._dirty = False
        self._settled = False

    def settle(self) -> None:
        """Say that the files asked about no longer change (whoever wrote them is gone, as
        after a job's processes ended): from now on a digest is remembered even when the
        file was modified just before it was hashed, so the digest can vouch for the file
        (a store then moves or copies it without reading it a second time)."""
        with self._lock:
            self._settled = True

    def digest(
        self,
        file: Path | str,
        st: os.stat_result,
        *,
        hasher: Callable[[Path | str], str] | None = None,
    ) -> str:
        """The digest of `file`, whose current stat is `st`; hashes only when not cached,
        with `hasher` when given (e.g. one that stores the file while hashing it)."""
        cached = self.lookup(file, st)
        if cached is not None:
            return cached
        started = time.time_ns()
        digest = (hasher or self._hasher)(file)
        self.remember(file, st, digest, hashed_at=started)
        return digest

    def hash_file(self, file: Path | str) -> str:
        """The digest of `file`, computed by this cache's hasher (nothing is remembered)."""
        return self._hasher(file)

    def lookup(self, file: Path | str, st: os.stat_result) -> str | None:
        """The remembered digest of `file` in state `st`, or None."""
        with self._lock:
            entry = self._entries.get(str(file))
        if entry is not None and entry[0] == _key(st):
            return entry[1]
        return None

    def remember(
        self, file: Path | str, st: os.stat_result, digest: str, *, hashed_at: int
    ) -> None:
        """Record that `file` in state `st` hashed to `digest`, the hash having started at
        `hashed_at` (time.time_ns()); racily clean files are forgotten instead."""
        with self._lock:
            if not self._settled and st.st_mtime_ns >= hashed_at - RACY_NS:
                self._dirty |= self._entries.pop(str(file), None) is not None
                return
            self._entries[str(file)] = (_key(st), digest)
            self._dirty = True

    def save(self) -> None:
        """Write the memo atomically (temp file + rename); a no-op in memory or when clean."""
        if self.path is None or not self._dirty:
            return
        with self._lock:
            body = {
                "version": _VERSION,
                "digest": ALGORITHM,
                "entries": {p: [*k, d] for p, (k, d) in self._entries.items()},
            }
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".statcache-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(body, out, separators=(",", ":"))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _load(self) -> dict[str, tuple[Key, str]]:
        """The persisted memo; a missing, unreadable or corrupt file is an empty memo (it is
        only a cache: the worst case is hashing again)."""
        assert self.path is not None
        try:
            body = json.loads(self.path.read_text())
            if body.get("version") != _VERSION or body.get("digest", "sha256") != ALGORITHM:
                return {}  # another format, or digests of another algorithm
            return {
                str(p): ((int(s), int(m), int(i)), str(d))
                for p, (s, m, i, d) in body["entries"].items()
            }
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return {}


def _key(st: os.stat_result) -> Key:
    return (st.st_size, st.st_mtime_ns, st.st_ino)
