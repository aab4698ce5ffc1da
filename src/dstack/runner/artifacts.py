"""Artifact sync: a running job's declared paths go to the blob store as they change.

While the job runs, each artifact path is scanned every `artifact_sync_interval` seconds
(`mount_sync_interval` for `mount: true`); only files whose blobs are missing are uploaded,
and the server gets the manifest when it changed. After the job's processes are gone,
`finish` scans and pushes once more and saves the workflow caches, so a crash, stop or abort
keeps everything that was written.

Moving files out of the job's folder is journaled (`journal`, `dstack.runner.held`): the
manifest is written to the runner's work dir before the first rename and kept until the
job's record is released, so a crash after it loses no reference: a restarted runner posts
the journaled manifests, joined with what is still in the folder (`carried`); a manifest it
posts is never shorter than one the server acknowledged before the crash.

Every round checks each path on disk first (`JobPaths.check_root`): a path that is, or lies
under, a symbolic link is not read (the job could point it at any file of the host); at the
end such a path gets a warning line in the job's log and the other paths are saved.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dstack.errors import DstackError
from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.job import JobSpec
from dstack.runner.faults import pause_point
from dstack.runner.paths import JobPaths
from dstack.runner.settings import RunnerSettings
from dstack.runner.sizes import format_size
from dstack.storage.base import BlobStore, SupportsIngest, missing_of
from dstack.storage.manifests import scan
from dstack.storage.paths import UnsafePathError
from dstack.storage.statcache import StatCache
from dstack.storage.transfer import TransferStats, push

log = logging.getLogger(__name__)

PostManifest = Callable[[Manifest], None]


class Journal(Protocol):
    """Where manifests wait between storing their files by moving them and being posted."""

    def record(self, declared: str, *, cache: bool, manifest: Manifest) -> Path: ...


class Carried(Protocol):
    """A manifest an earlier runner journaled: its blobs were stored, it may never have
    been posted (`dstack.runner.held.Journaled`)."""

    @property
    def declared(self) -> str: ...

    @property
    def cache(self) -> bool: ...

    @property
    def manifest(self) -> Manifest: ...


@dataclass
class _Tracked:
    """One declared path and what the server already has of it."""

    declared: str
    host: Path
    interval: float
    movable: bool
    due: float
    posted: str | None = None
    """Digest of the manifest the server holds (None: nothing posted yet)."""
    uploaded_files: int = 0
    uploaded_bytes: int = 0

    def record(self, stats: TransferStats, stored: _Stored) -> None:
        self.uploaded_files += stats.files + stored.files
        self.uploaded_bytes += stats.bytes + stored.bytes

    def summary(self, manifest: Manifest, *, cache: bool) -> str:
        """`uploaded 3 files (1.2 GB) of model/; 10 unchanged` (over the whole job)."""
        unchanged = max(0, len(manifest.files) - self.uploaded_files)
        files = "file" if self.uploaded_files == 1 else "files"
        uploaded = f"uploaded {self.uploaded_files} {files} ({format_size(self.uploaded_bytes)})"
        if cache:
            return f"saved cache {self.declared}: {uploaded}; {unchanged} unchanged"
        return f"{uploaded} of {self.declared}; {unchanged} unchanged"


class _Stored:
    """Wraps a store's `ingest` for `scan`, counting the blobs it stored (they are uploads
    as much as those `push` makes)."""

    def __init__(self, store: SupportsIngest | None) -> None:
        self._store = store
        self.files = 0
        self.bytes = 0

    def ingest(self) -> Callable[[Path | str, os.stat_result], str] | None:
        return None if self._store is None else self._ingest

    def _ingest(self, path: Path | str, st: os.stat_result) -> str:
        assert self._store is not None
        digest, stored = self._store.ingest(path, st)
        if stored:
            self.files += 1
            self.bytes += st.st_size
        return digest


class ArtifactSync:
    """Keeps one job's artifacts (and, at the end, its workflow caches) in the blob store.

    `start` runs the periodic sync on a thread; `stop` ends it after the sync in progress;
    `finish` is the final sync, called once the job's processes are gone. `post_artifact`
    and `post_cache` send a manifest to the server; both are called only after every blob
    the manifest names was stored.
    """

    def __init__(
        self,
        *,
        spec: JobSpec,
        paths: JobPaths,
        store: BlobStore,
        settings: RunnerSettings,
        post_artifact: PostManifest,
        post_cache: PostManifest,
        clock: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
        carried: Iterable[Carried] = (),
    ) -> None:
        self._store = store
        self._journal = journal
        self._carried = {(c.declared, c.cache): c.manifest for c in carried}
        self._crash_point = settings.crash_point
        self._post_artifact = post_artifact
        self._post_cache = post_cache
        self._clock = clock
        self._paths = paths
        self._stat_cache: StatCache = StatCache(None)
        now = clock()
        self._artifacts = [
            _tracked(a.path, paths, now, _interval(a.mount, settings)) for a in spec.artifacts
        ]
        self._caches = [_tracked(path, paths, now, 0.0) for path in spec.cache]
        self._stopped = threading.Event()
        # One round at a time: the periodic one, one asked for (`sync_now`), the final one.
        self._round = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="artifact-sync", daemon=True)

    def start(self) -> ArtifactSync:
        if self._artifacts:
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the periodic sync; blocks until a sync in progress is done."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def has_work(self, *, caches: bool) -> bool:
        """True when the job declared artifacts (or caches, with `caches`) to sync at the end."""
        return bool(self._artifacts or (caches and self._caches))

    def finish(
        self,
        *,
        move: bool,
        caches: bool,
        say: Callable[[str], None],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """Final scan and push of every artifact (and cache, with `caches`).

        With `move`, files inside the job dir are moved into a local store instead of copied:
        the job dir is about to be deleted. `say` gets a summary line per path once its blobs
        are stored, before its manifest is posted (the line travels meanwhile); `warn` (default
        `say`) a line per path that cannot be saved. Raises `DstackError` when a push or post
        failed.
        """
        self.stop()
        with self._round:
            self._finish(move=move, caches=caches, say=say, warn=warn or say)

    def _finish(
        self,
        *,
        move: bool,
        caches: bool,
        say: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> None:
        # The job's processes are gone: digests computed now stay true, so the store may
        # move (or copy) each file on the strength of this scan's hash alone.
        self._stat_cache.settle()
        saved = self._caches if caches else []
        every = [*self._artifacts, *saved]
        scanned = []
        for tracked in every:
            try:
                scanned.append(
                    (tracked, *self._scan(tracked, ingest=not (move and tracked.movable)))
                )
            except UnsafePathError as exc:  # the others are still saved
                warn(f"warning: {'cache' if tracked in saved else 'artifact'} not saved: {exc}")
        for tracked, manifest, stored in scanned:
            is_cache = tracked in saved
            moving = move and tracked.movable
            if moving and self._journal is not None:
                self._journal.record(tracked.declared, cache=is_cache, manifest=manifest)
            self._push(
                tracked,
                manifest,
                stored,
                self._post_cache if is_cache else self._post_artifact,
                move=moving,
                force=is_cache or (tracked.declared, is_cache) in self._carried,
                pushed=functools.partial(self._pushed, say, tracked, manifest, is_cache),
            )

    def _pushed(
        self, say: Callable[[str], None], tracked: _Tracked, manifest: Manifest, cache: bool
    ) -> None:
        """Between storing a final sync's blobs and posting its manifest: join what an
        earlier runner journaled, say the summary line (and, in tests, crash here)."""
        carried = self._carried.get((tracked.declared, cache))
        if carried is not None:
            manifest.files = _joined(carried, manifest, self._store)
        if manifest.files or cache or tracked.posted is not None:
            say(tracked.summary(manifest, cache=cache))
        else:  # kept as an empty artifact: `dstack ls` shows it, with nothing in it
            say(f"artifact '{tracked.declared}' was declared but not written")
        if self._crash_point is not None:
            self._crash_point("artifacts-stored")

    def sync_due(self) -> None:
        """One periodic round: sync the artifacts whose interval has passed."""
        with self._round:
            now = self._clock()
            for tracked in self._artifacts:
                if tracked.due > now or self._stopped.is_set():
                    continue
                tracked.due = now + tracked.interval
                self._sync_one(tracked)

    def sync_now(self) -> int:
        """Sync every artifact now, whatever its interval (the machine is about to go away);
        the number of paths synced. Nothing once the final sync began (it does the same)."""
        synced = 0
        with self._round:
            for tracked in self._artifacts:
                if self._stopped.is_set():
                    break
                tracked.due = self._clock() + tracked.interval
                synced += self._sync_one(tracked)
        return synced

    def _sync_one(self, tracked: _Tracked) -> bool:
        try:
            manifest, stored = self._scan(tracked)
            if manifest.files or tracked.posted is not None:
                self._push(tracked, manifest, stored, self._post_artifact, move=False)
            return True
        except (DstackError, OSError) as exc:
            # Files change under a running job; the next round (or the final one) retries.
            log.info("syncing %s failed, retrying later: %s", tracked.declared, exc)
            return False

    def _loop(self) -> None:
        while not self._stopped.wait(self._until_due()):
            self.sync_due()

    def _until_due(self) -> float:
        return max(0.0, min(t.due for t in self._artifacts) - self._clock())

    def _scan(self, tracked: _Tracked, *, ingest: bool = True) -> tuple[Manifest, _Stored]:
        """The manifest of a declared path, and what the scan stored. With `ingest` and a
        store on this disk, each new or changed file is stored in the same read that hashes
        it, so a sync costs one pass over the bytes; the final sync of files about to be
        moved into the store only hashes them (a rename then stores them)."""
        store = self._store if ingest and isinstance(self._store, SupportsIngest) else None
        stored = _Stored(store)
        manifest = scan(
            self._paths.check_root(tracked.declared),
            tracked.declared,
            within=self._paths.job_dir,
            stat_cache=self._stat_cache,
            ingest=stored.ingest(),
        )
        return manifest, stored

    def _push(
        self,
        tracked: _Tracked,
        manifest: Manifest,
        stored: _Stored,
        post: PostManifest,
        *,
        move: bool,
        force: bool = False,
        pushed: Callable[[], None] | None = None,
    ) -> None:
        """Upload the missing blobs, then post the manifest if the server lacks it.

        `push` corrects the manifest for files that changed or vanished since the scan, so
        what is posted always names stored blobs only. `pushed` is called between the two
        (also when the server has the manifest already).
        """
        if manifest.digest() == tracked.posted and not force:
            if pushed is not None:
                pushed()
            return
        stats = push(
            manifest,
            tracked.host,
            self._store,
            move=move,
            within=self._paths.job_dir,
            stat_cache=self._stat_cache,
        )
        tracked.record(stats, stored)
        pause_point("upload" if self._stopped.is_set() else "sync", self._paths.job_dir.name)
        if pushed is not None:
            pushed()
        post(manifest)
        tracked.posted = manifest.digest()


def _joined(carried: Manifest, found: Manifest, store: BlobStore) -> list[FileEntry]:
    """The files of `found` (scanned now) and those of `carried` (journaled earlier, moved
    out of the folder since) that do not clash with them and whose blobs are stored."""
    names = {f.path for f in found.files}
    folders = {parent for name in names for parent in _parents(name)}
    kept = [
        f
        for f in carried.files
        if f.path not in names
        and f.path not in folders
        and not any(parent in names for parent in _parents(f.path))
        and (f.path != "" or not names)
        and ("" not in names)
    ]
    lacking = set(missing_of(store, [f.digest for f in kept]))
    joined = found.files + [f for f in kept if f.digest not in lacking]
    return sorted(joined, key=lambda f: f.path)


def _parents(name: str) -> list[str]:
    parents = []
    parent, _, _ = name.rpartition("/")
    while parent:
        parents.append(parent)
        parent, _, _ = parent.rpartition("/")
    return parents


def _tracked(declared: str, paths: JobPaths, now: float, interval: float) -> _Tracked:
    return _Tracked(
        declared=declared,
        host=paths.host_path(declared),
        interval=interval,
        movable=paths.inside_job_dir(declared),
        due=now + interval,
    )


def _interval(mount: bool, settings: RunnerSettings) -> float:
    return settings.mount_sync_interval if mount else settings.artifact_sync_interval
