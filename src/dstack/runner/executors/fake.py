"""`FakeExecutor`: the in-memory twin of the executors. It runs nothing.

Each job does what a `FakeJob` script says (the output it writes, the exit code it ends with,
whether it runs until stopped, how it takes SIGTERM), and the executor records what it was
asked: the jobs it started, the signals each got, the reconciles. The executor contract
suite (`tests/runner/executors/test_executor_contract.py`) runs it beside the real ones, so
a runner test that injects it gets an executor that behaves as they do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dstack.models.logs import LogStream
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import ExitResult, JobLaunch, RunnerIdentity

SIGTERM_EXIT = 143
SIGKILL_EXIT = 137


@dataclass(frozen=True)
class FakeJob:
    """What a fake job does."""

    output: tuple[tuple[LogStream, bytes], ...] = ()
    """Written as soon as the job starts, in order."""
    exit_code: int = 0
    oom: bool = False
    runs: bool = False
    """Keeps running until it is stopped or killed (else it ends at once with `exit_code`)."""
    on_term: int | None = SIGTERM_EXIT
    """The exit code it ends with on SIGTERM; None: it ignores SIGTERM (SIGKILL ends it)."""
    term_output: tuple[tuple[LogStream, bytes], ...] = ()
    """Written when it takes SIGTERM (a handler's message)."""
    start_error: JobStartError | None = None
    """Raised by `start` instead of starting."""


class FakeHandle:
    """A fake job; see `JobHandle` for the contract of each method. Thread-safe."""

    def __init__(self, job: JobLaunch, script: FakeJob) -> None:
        self.job = job
        self.script = script
        self.signals: list[str] = []
        """The signals the job got while running ("TERM", "KILL"), in order."""
        self.cleaned = False
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._result: ExitResult | None = None
        _write(job, script.output)
        if not script.runs:
            self._end(script.exit_code, oom=script.oom)

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        self._ended.wait(timeout)
        return self._result

    def stop(self, grace: float) -> None:
        if not self._signal("TERM"):
            return
        if self.script.on_term is not None:
            _write(self.job, self.script.term_output)
            self._end(self.script.on_term)
        elif not self._ended.wait(grace):
            self.kill()

    def kill(self) -> None:
        if self._signal("KILL"):
            self._end(SIGKILL_EXIT)

    def cleanup(self) -> None:
        self.kill()
        self.cleaned = True

    def _signal(self, name: str) -> bool:
        """Record `name` for a job still running; False when it already ended."""
        with self._lock:
            if self._result is not None:
                return False
            self.signals.append(name)
            return True

    def _end(self, exit_code: int, *, oom: bool = False) -> None:
        with self._lock:
            if self._result is None:
                self._result = ExitResult(exit_code=exit_code, oom=oom)
        self._ended.set()


@dataclass
class FakeExecutor:
    """`Executor` whose jobs follow scripts: `scripts[job_id]`, else `default`."""

    default: FakeJob = field(default_factory=FakeJob)
    scripts: dict[str, FakeJob] = field(default_factory=dict)
    name: str = "fake"
    started: list[FakeHandle] = field(default_factory=list)
    reconciled: list[tuple[RunnerIdentity, frozenset[str]]] = field(default_factory=list)
    owner: RunnerIdentity | None = None

    def start(self, job: JobLaunch) -> FakeHandle:
        script = self.scripts.get(job.job_id, self.default)
        if script.start_error is not None:
            raise script.start_error
        handle = FakeHandle(job, script)
        self.started.append(handle)
        return handle

    def reconcile(self, owner: RunnerIdentity, owned_job_ids: set[str]) -> None:
        """Records the call; a fake job never outlives its handle, so nothing is left over."""
        self.owner = owner
        self.reconciled.append((owner, frozenset(owned_job_ids)))


def _write(job: JobLaunch, chunks: tuple[tuple[LogStream, bytes], ...]) -> None:
    for stream, data in chunks:
        job.output(stream, data)
