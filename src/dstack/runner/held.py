"""What a runner keeps about each job it holds, so that a restarted runner finishes it.

One folder per job in `<work_dir>/held/<job_id>/`, the runner's alone (the work dir is 0700;
a job never writes there, so nothing a job does can forge what recovery posts):

- `assignment.json`: the job's assignment without its secret values, written before the
  job starts; the folder is removed once the job's final status was accepted (or refused).
- `process.json`: the job's process group and its start time, to kill what outlived the runner.
- `final.json`: how the job ended, noted before its final artifact sync.
- `manifest-<n>.json`: the journal. A manifest whose files are about to be moved out of the
  job's folder into the store is written here before the first rename and kept until the
  folder is released: its files left the job's folder, so a restarted runner knows them only
  from here, also after the server acknowledged the manifest (a shorter one posted by the
  restarted runner would hide them).

Every file is written to a temp name and renamed, so a crash leaves it whole or absent.
Nothing is fsync'ed: this guards against a killed runner, not a power loss (see
`LocalBlobStore`).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
from pydantic import BaseModel, ValidationError

from dstack.models.artifacts import Manifest
from dstack.models.protocol import JobAssignment, JobStatusUpdate

HELD_DIR = "held"
_ASSIGNMENT = "assignment.json"
_PROCESS = "process.json"
_FINAL = "final.json"
_JOURNAL_PREFIX = "manifest-"
_M = TypeVar("_M", bound=BaseModel)
log = logging.getLogger(__name__)


class _JournalEntry(BaseModel):
    declared: str
    cache: bool
    manifest: Manifest


class _Process(BaseModel):
    pid: int
    started: float
    """The process's start time (`psutil.Process.create_time`): a reused pid differs."""


@dataclass(frozen=True)
class Journaled:
    """One manifest of the journal: stored blobs, maybe never posted."""

    entry: Path
    declared: str
    cache: bool
    manifest: Manifest


class HeldJob:
    """The record of one job this runner holds (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._counter = itertools.count()

    @property
    def job_id(self) -> str:
        return self.folder.name

    def write_assignment(self, assignment: JobAssignment) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = assignment.model_copy(update={"secrets": {}})
        _write(self.folder / _ASSIGNMENT, kept.model_dump_json())

    def assignment(self) -> JobAssignment | None:
        """The assignment, or None when it is missing or unreadable."""
        return _read(self.folder / _ASSIGNMENT, JobAssignment)

    def note_process(self, pid: int) -> None:
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            return
        _note(self.folder / _PROCESS, _Process(pid=pid, started=started).model_dump_json())

    def kill_leftover(self) -> None:
        """SIGKILL the job's process group if its leader still lives (the runner died
        under it): recovery reads a folder nobody writes any more."""
        noted = _read(self.folder / _PROCESS, _Process)
        if noted is None:
            return
        try:
            if psutil.Process(noted.pid).create_time() != noted.started:
                return
            os.killpg(noted.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            return

    def note_final(self, update: JobStatusUpdate) -> None:
        _note(self.folder / _FINAL, update.model_dump_json())

    def final(self) -> JobStatusUpdate | None:
        return _read(self.folder / _FINAL, JobStatusUpdate)

    def record(self, declared: str, *, cache: bool, manifest: Manifest) -> Path:
        """Journal `manifest` (about to be stored by moving its files); returns its entry."""
        entry = self.folder / f"{_JOURNAL_PREFIX}{os.getpid()}-{next(self._counter)}.json"
        data = _JournalEntry(declared=declared, cache=cache, manifest=manifest)
        _write(entry, data.model_dump_json())
        return entry

    def journaled(self) -> list[Journaled]:
        """The manifests journaled, oldest first."""
        found = []
        for entry in sorted(self.folder.glob(f"{_JOURNAL_PREFIX}*.json"), key=_mtime):
            data = _read(entry, _JournalEntry)
            if data is not None:
                found.append(Journaled(entry, data.declared, data.cache, data.manifest))
        return found

    def release(self) -> None:
        """The job is over for this runner: drop its record."""
        shutil.rmtree(self.folder, ignore_errors=True)


class HeldJobs:
    """The records of the jobs held by the runner of `work_dir`."""

    def __init__(self, work_dir: Path) -> None:
        self.root = work_dir / HELD_DIR

    def hold(self, assignment: JobAssignment) -> HeldJob:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        held = HeldJob(self.root / assignment.job_id)
        held.write_assignment(assignment)
        return held

    def all(self) -> list[HeldJob]:
        if not self.root.is_dir():
            return []
        return [HeldJob(folder) for folder in sorted(self.root.iterdir()) if folder.is_dir()]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _note(path: Path, text: str) -> None:
    """`_write` for what recovery can do without (a full disk must not end the job's
    worker): without the process record a leftover process is not killed, without the
    final record a recovered job is reported as ended by the restart."""
    try:
        _write(path, text)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def _read(path: Path, model: type[_M]) -> _M | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
