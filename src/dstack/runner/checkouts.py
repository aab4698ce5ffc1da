"""A runner's checked-out code, kept for the next jobs of the same code.

Checking a tree out costs a job several git processes (init, fetch from the bundle, checkout,
write-tree, `apply` for local changes); a copy of an earlier checkout costs a few file copies.
Entries live in `<work_dir>/checkouts/<key>`, keyed by everything that decides the checkout
(`checkout_key`); the least recently used beyond `keep` are removed. In a copy, git's object
files are hard links (git never changes an object file, `git clone --local` links them too);
every other file is a copy of its own, because a job may change its code.

With a `spares` folder (on the jobs' file system), copies of each checkout in use are made
ahead (`SPARES` of them), in the background, while the job that used it runs: the next jobs of
the same code take one with a rename instead of copying while they start. Two, because a
runner's slots end and start jobs of one run close together: the job of the second slot then
finds a copy too, while the first slot's is made again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from dstack.models.repo import RepoRef

log = logging.getLogger(__name__)

_TEMP = ".tmp-"
SPARES = 2
"""Spare copies kept per checkout in use (see the module's docstring)."""
# What makes two checkouts the same: `repo_id` and `subdir` only say where the code is used.
_KEY_FIELDS = {
    "commit",
    "tree",
    "branch",
    "remote_url",
    "bundle_digest",
    "diff_digest",
    "clone_url",
}


def checkout_key(repo: RepoRef) -> str:
    return hashlib.sha256(repo.model_dump_json(include=_KEY_FIELDS).encode()).hexdigest()[:32]


class CheckoutCache:
    """Checkouts under `root`, at most `keep` of them. Thread-safe; several runners may share
    `root`. Every method is best effort: a cache that cannot be used is no cache."""

    def __init__(self, root: Path, *, keep: int = 8, spares: Path | None = None) -> None:
        self.root = root
        self.keep = keep
        self.spares = spares
        self._lock = threading.Lock()
        self._refilling: set[str] = set()

    def has(self, repo: RepoRef) -> bool:
        """Whether a checkout of `repo` is kept (`copy_to` may still fail: a full disk)."""
        return (self.root / checkout_key(repo)).is_dir()

    def copy_to(self, repo: RepoRef, target: Path) -> bool:
        """Copy the checkout of `repo` to `target` (which must not exist); False when there
        is none, or it could not be copied (then `target` does not exist either)."""
        key = checkout_key(repo)
        entry = self.root / key
        if not entry.is_dir():
            return False
        try:
            os.utime(entry)  # recently used: pruned last
            if not self._take_spare(key, target):
                _copy_tree(entry, target)
        except OSError as exc:  # pruned meanwhile, or a full disk: check the code out instead
            log.info("cannot reuse the checkout %s: %s", entry.name, exc)
            shutil.rmtree(target, ignore_errors=True)
            return False
        return True

    def prepare(self, repo: RepoRef) -> None:
        """Make the spare copy of `repo`'s checkout for its next job, on a thread of its own
        (nothing without a `spares` folder, a kept checkout, or when one is made already)."""
        key = checkout_key(repo)
        if self.spares is None or all((self.spares / n).exists() for n in _spare_names(key)):
            return
        with self._lock:
            if key in self._refilling:
                return
            self._refilling.add(key)
        threading.Thread(target=self._make_spare, args=(key,), name="spare", daemon=True).start()

    def _make_spare(self, key: str) -> None:
        assert self.spares is not None
        try:
            for name in _spare_names(key):
                if not (self.spares / name).exists():
                    self._make_copy(key, self.spares / name)
        finally:
            with self._lock:
                self._refilling.discard(key)

    def _make_copy(self, key: str, spare: Path) -> None:
        assert self.spares is not None
        temp = self.spares / f"{_TEMP}{uuid.uuid4().hex}"
        try:
            # The runner's alone: jobs (of another user, even) may enter the jobs' folder.
            self.spares.mkdir(mode=0o700, parents=True, exist_ok=True)
            _copy_tree(self.root / key, temp)
            os.rename(temp, spare)  # fails when one is there already
        except OSError as exc:
            log.debug("no spare copy of the checkout %s: %s", key, exc)
            shutil.rmtree(temp, ignore_errors=True)

    def _take_spare(self, key: str, target: Path) -> bool:
        """Move a spare copy of `key` to `target`; False when there is none."""
        if self.spares is None:
            return False
        for name in _spare_names(key):
            try:
                os.rename(self.spares / name, target)
            except OSError:  # none (or taken by another job meanwhile)
                continue
            return True
        return False  # copy instead

    def save(self, repo: RepoRef, source: Path) -> None:
        """Keep a copy of `source`, the fresh checkout of `repo`, then prune."""
        if self.keep <= 0:
            return
        entry = self.root / checkout_key(repo)
        if entry.exists():
            return
        temp = self.root / f"{_TEMP}{uuid.uuid4().hex}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _copy_tree(source, temp, keep_samples=False)
            os.rename(temp, entry)  # fails when another job saved the same code meanwhile
        except OSError as exc:
            if not entry.exists():
                log.info("cannot keep the checkout %s: %s", entry.name, exc)
            shutil.rmtree(temp, ignore_errors=True)
            return
        self._prune()

    def _prune(self) -> None:
        with self._lock:
            try:
                entries = [e for e in os.scandir(self.root) if not e.name.startswith(_TEMP)]
                entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
            except OSError:
                return
            for old in entries[self.keep :]:
                # Renamed first, so that no job copies from a half-removed entry.
                doomed = self.root / f"{_TEMP}{uuid.uuid4().hex}"
                try:
                    os.rename(old.path, doomed)
                except OSError:
                    continue
                shutil.rmtree(doomed, ignore_errors=True)
                if self.spares is not None:  # its spare copies go with it
                    for name in _spare_names(old.name):
                        shutil.rmtree(self.spares / name, ignore_errors=True)


def _spare_names(key: str) -> list[str]:
    return [key, *(f"{key}.{n}" for n in range(1, SPARES))]


def _copy_tree(source: Path, target: Path, *, keep_samples: bool = True) -> None:
    """A copy of the checkout `source`; git's objects are linked. Without `keep_samples`,
    the sample hooks `git init` writes (a dozen files nothing runs) are left out: every job's
    copy of a kept checkout then copies a quarter fewer files."""
    objects = os.path.join(source, ".git", "objects") + os.sep
    hooks = os.path.join(source, ".git", "hooks")

    def copy(src: str, dst: str) -> None:
        if src.startswith(objects):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another file system: copy it
        shutil.copy2(src, dst)

    def samples(folder: str, names: list[str]) -> set[str]:
        if keep_samples or folder != hooks:
            return set()
        return {name for name in names if name.endswith(".sample")}

    shutil.copytree(source, target, symlinks=True, copy_function=copy, ignore=samples)
