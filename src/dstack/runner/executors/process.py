"""Runs jobs as host processes, for machines without Docker.

Each job is a bash process in its own session (so its process group holds every process it
starts), in `<job dir>/code/<working_dir>`. `python: X.Y` puts `pythonX.Y` first on PATH as
`python`/`python3`/`pip`; `requirements` gives the job its own venv. A spec that names an image
is refused: this executor cannot honour it. The runner gives each job its own `HOME` in its
job dir (`dstack.runner.paths`), so `~/.cache/...` artifacts and caches are the job's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from dstack.models.job import TerminationReason
from dstack.models.logs import LogStream
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import (
    ExitResult,
    JobContext,
    OutputSink,
    RunnerIdentity,
    command_of,
)

_READ_SIZE = 1 << 16
_PUMP_JOIN_TIMEOUT = 5.0


class ProcessExecutor:
    """`Executor` running each job as a host process group.

    `base_env` is the environment jobs start from (None: this process's at start time).
    """

    name = "process"

    def __init__(self, base_env: Mapping[str, str] | None = None) -> None:
        self._base_env = base_env

    def start(self, job: JobContext) -> ProcessHandle:
        if job.spec.image:
            raise JobStartError(
                f"this runner has no Docker: workflow '{job.label}' needs image {job.spec.image}",
                "start the runner where Docker is available or remove `image`",
            )
        argv = command_of(job.spec)
        if argv is None:
            raise JobStartError(f"workflow '{job.label}' has no commands to run")
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update(job.env)
        env["PATH"] = _job_path(job, env.get("PATH", os.defpath))
        job.working_dir.mkdir(parents=True, exist_ok=True)
        try:
            process = subprocess.Popen(
                argv,
                cwd=job.working_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise JobStartError(f"cannot start workflow '{job.label}': {exc}") from exc
        return ProcessHandle(process, job.output)

    def reconcile(self, owner: RunnerIdentity, owned_job_ids: set[str]) -> None:
        """Nothing to do: a job's processes do not outlive the runner's handle on them."""


class ProcessHandle:
    """A running job's process group; see `JobHandle` for the contract of each method."""

    def __init__(self, process: subprocess.Popen[bytes], output: OutputSink) -> None:
        self._process = process
        self._pgid = process.pid  # start_new_session: the leader's pid is the group id
        assert process.stdout is not None
        assert process.stderr is not None
        self._pumps = [
            _start_pump(process.stdout, LogStream.STDOUT, output),
            _start_pump(process.stderr, LogStream.STDERR, output),
        ]
        self._result: ExitResult | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait(self, timeout: float | None = None) -> ExitResult | None:
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        with self._lock:
            if self._result is None:
                # Children the job left running die with it; then their pipes close.
                self._signal_group(signal.SIGKILL)
                for pump in self._pumps:
                    pump.join(_PUMP_JOIN_TIMEOUT)
                self._result = ExitResult(exit_code=code if code >= 0 else 128 - code)
            return self._result

    def stop(self, grace: float) -> None:
        if self._process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)

    def kill(self) -> None:
        if self._process.poll() is None:
            self._signal_group(signal.SIGKILL)

    def cleanup(self) -> None:
        self.kill()
        self.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group may be gone already.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)


def _start_pump(pipe: IO[bytes], stream: LogStream, output: OutputSink) -> threading.Thread:
    fd = pipe.fileno()

    def pump() -> None:
        try:
            while chunk := os.read(fd, _READ_SIZE):
                output(stream, chunk)
        finally:
            pipe.close()

    thread = threading.Thread(target=pump, name=f"pump-{stream}", daemon=True)
    thread.start()
    return thread


def _job_path(job: JobContext, path: str) -> str:
    """PATH for the job: the requested Python (or a venv of it) in front of the host's."""
    interpreter = _find_python(job.spec.python, path) if job.spec.python else None
    if job.spec.python and interpreter is None:
        fallback = shutil.which("python3", path=path) or "python3"
        job.notice(
            f"warning: python {job.spec.python} is not installed on this runner; "
            f"using {fallback} instead"
        )
    prefix: list[str] = []
    if interpreter is not None:
        prefix.append(str(_python_shims(job.job_dir / "python-bin", interpreter)))
    if job.spec.requirements:
        base = interpreter or shutil.which("python3", path=path) or "python3"
        prefix.insert(0, str(_make_venv(job, base)))
    return os.pathsep.join([*prefix, path])


def _find_python(version: str, path: str) -> str | None:
    """`pythonX.Y` from PATH when it actually runs (pyenv shims exist for missing versions)."""
    candidate = shutil.which(f"python{version}", path=path)
    if candidate is None:
        return None
    probe = subprocess.run(
        [candidate, "-c", "import sys"], capture_output=True, timeout=30, check=False
    )
    return candidate if probe.returncode == 0 else None


def _python_shims(directory: Path, interpreter: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        link = directory / name
        link.unlink(missing_ok=True)
        link.symlink_to(interpreter)
    for name in ("pip", "pip3"):
        script = directory / name
        script.write_text(f'#!/bin/sh\nexec "{interpreter}" -m pip "$@"\n')
        script.chmod(0o755)
    return directory


def _make_venv(job: JobContext, interpreter: str) -> Path:
    """A fresh venv in the job dir; returns its `bin`. Its output goes to the job's log."""
    venv = job.job_dir / "venv"
    job.notice(f"creating a virtual environment for {job.spec.requirements} in {venv}")
    result = subprocess.run(
        [interpreter, "-m", "venv", str(venv)], capture_output=True, timeout=600, check=False
    )
    if result.stdout:
        job.output(LogStream.STDOUT, result.stdout)
    if result.stderr:
        job.output(LogStream.STDERR, result.stderr)
    if result.returncode != 0:
        raise JobStartError(
            f"cannot create a virtual environment with {interpreter} for workflow '{job.label}'",
            "check that the venv module is installed (Debian: apt-get install python3-venv)",
            reason=TerminationReason.EXECUTOR_ERROR,
        )
    return venv / "bin"
