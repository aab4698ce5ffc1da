"""Runs jobs as host processes, for machines without Docker.

Each job is a bash process in its own session (so its process group holds every process it
starts), in `<job dir>/code/<working_dir>`. Its environment is its own variables plus the
host's allowlisted ones (`dstack.runner.environment.host_env`), never the runner's; its
Python is a virtualenv of its own (`dstack.runner.pythons`): `python: X.Y` picks the
interpreter, `python`/`pip` on its PATH are the venv's, and `requirements` makes it a venv of
only what the job installs. A spec that names an image is
refused: this executor cannot honour it. The runner gives each job its own `HOME` in its
job dir (`dstack.runner.paths`), so `~/.cache/...` artifacts and caches are the job's.

With a `JobUser` (a runner started as root), the job runs as that user: its folders are
handed over to it first (`dstack.runner.jobuser.hand_over`), its PATH keeps only folders that
user can enter, and `USER`/`LOGNAME` name it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from dstack.models.job import TerminationReason
from dstack.models.logs import LogStream
from dstack.runner.environment import host_env
from dstack.runner.errors import JobStartError
from dstack.runner.executors.base import (
    ExitResult,
    JobLaunch,
    OutputSink,
    RunnerIdentity,
    command_of,
)
from dstack.runner.jobuser import JobUser, hand_over
from dstack.runner.pythons import Interpreter, Interpreters, run_venv_module, write_venv

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
_PUMP_JOIN_TIMEOUT = 5.0
RUNNER_ONLY = frozenset({"logs"})
"""Entries of a job dir that stay the runner's (its log spool) when the job runs as a
user of its own; everything else there is the job's."""


class ProcessExecutor:
    """`Executor` running each job as a host process group.

    `base_env` is the environment whose allowlisted variables jobs get (None: this
    process's at start time). `job_user`: the user jobs run as (None: the runner's own).
    """

    name = "process"

    def __init__(
        self,
        base_env: Mapping[str, str] | None = None,
        *,
        job_user: JobUser | None = None,
        interpreters: Interpreters | None = None,
    ) -> None:
        self._base_env = base_env
        self._user = job_user
        self._pythons = interpreters or Interpreters(job_user)

    def start(self, job: JobLaunch) -> ProcessHandle:
        if job.spec.image:
            raise JobStartError(
                f"this runner has no Docker: workflow '{job.label}' needs image {job.spec.image}",
                "start the runner where Docker is available or remove `image`",
            )
        argv = command_of(job.spec)
        if argv is None:
            raise JobStartError(f"workflow '{job.label}' has no commands to run")
        env = self._environment(job)
        job.working_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self._hand_over(job)
        try:
            process = subprocess.Popen(
                argv,
                cwd=job.working_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **self._identity(),
            )
        except OSError as exc:
            raise JobStartError(f"cannot start workflow '{job.label}': {exc}") from exc
        return ProcessHandle(process, job.output)

    def reconcile(self, owner: RunnerIdentity, owned_job_ids: set[str]) -> None:
        """Nothing to do: a job's processes do not outlive the runner's handle on them."""

    def _environment(self, job: JobLaunch) -> dict[str, str]:
        """The host's allowlisted variables, the job's own, and its venv first on PATH."""
        env = host_env(os.environ if self._base_env is None else self._base_env)
        user = self._user
        if user is not None:
            path = env["PATH"].split(os.pathsep)
            env["PATH"] = os.pathsep.join(p for p in path if user.can_enter(Path(p)))
            env["USER"] = env["LOGNAME"] = user.name
        env.update(job.env)
        bin_dir = self._venv(job, env)
        if bin_dir is not None:
            env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)])
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
        return env

    def _venv(self, job: JobLaunch, env: Mapping[str, str]) -> Path | None:
        """The job's own virtualenv (its `bin`); None when the host has no Python at all."""
        interpreter = self._interpreter(job, env)
        if interpreter is None:
            job.notice("warning: no python3 on this runner's PATH; the job has no Python")
            return None
        venv = job.job_dir / "venv"
        if job.spec.requirements:
            job.notice(f"creating a virtual environment for {job.spec.requirements} in {venv}")
            return _make_venv(job, venv, interpreter, system_site_packages=False)
        if interpreter.has_pip:
            return write_venv(venv, interpreter)
        job.notice(f"creating a virtual environment with pip in {venv}")
        return _make_venv(job, venv, interpreter, system_site_packages=True)

    def _interpreter(self, job: JobLaunch, env: Mapping[str, str]) -> Interpreter | None:
        version = job.spec.python
        if version:
            found = self._pythons.find(f"python{version}", env)
            if found is not None:
                return found
        default = self._pythons.find("python3", env)
        if version:
            fallback = default.executable if default else "no Python"
            job.notice(
                f"warning: python {version} is not installed on this runner; "
                f"using {fallback} instead"
            )
        return default

    def _hand_over(self, job: JobLaunch) -> None:
        """Give the job user its folders; the job dir itself stays the runner's (0711:
        entered, not listed), and so does its log spool."""
        assert self._user is not None
        os.chmod(job.job_dir, 0o711)
        entries = [e for e in job.job_dir.iterdir() if e.name not in RUNNER_ONLY]
        hand_over(entries, self._user)

    def _identity(self) -> dict[str, Any]:
        """`Popen` arguments that switch to the job user (none without one)."""
        user = self._user
        if user is None:
            return {}
        return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


class ProcessHandle:
    """A running job's process group; see `JobHandle` for the contract of each method."""

    def __init__(self, process: subprocess.Popen[bytes], output: OutputSink) -> None:
        self._process = process
        self._pgid = process.pid  # start_new_session: the leader's pid is the group id
        assert process.stdout is not None
        assert process.stderr is not None
        self._pump = _start_pump(
            {LogStream.STDOUT: process.stdout, LogStream.STDERR: process.stderr}, output
        )
        self._result: ExitResult | None = None
        self._lock = threading.Lock()
        self._oom_kills = oom_kills()

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
                self._pump.join(_PUMP_JOIN_TIMEOUT)
                exit_code = code if code >= 0 else 128 - code
                self._result = ExitResult(exit_code=exit_code, oom=self._oom_killed(exit_code))
            return self._result

    def _oom_killed(self, exit_code: int) -> bool:
        """Killed by SIGKILL (137: the job or its shell's child) while the kernel's OOM killer
        struck in the runner's memory cgroup: the job ran out of memory."""
        if exit_code != 128 + signal.SIGKILL or self._oom_kills is None:
            return False
        after = oom_kills()
        return after is not None and after > self._oom_kills

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


OOM_COUNTERS = (
    Path("/sys/fs/cgroup/memory.events"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.oom_control"),  # cgroup v1
)


def oom_kills(counters: tuple[Path, ...] = OOM_COUNTERS) -> int | None:
    """How many processes the OOM killer killed in this process's memory cgroup so far;
    None where the kernel does not say."""
    for path in counters:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def _start_pump(pipes: Mapping[LogStream, IO[bytes]], output: OutputSink) -> threading.Thread:
    """Read the job's streams until the job closes them all, on one thread (a thread each
    cost every job's start a thread's start more). The pipes are drained whatever `output`
    does: a reader that stopped would make the job block, or die of SIGPIPE, on its next
    write — its log must never kill it."""
    selector = selectors.DefaultSelector()
    for stream, pipe in pipes.items():
        selector.register(pipe.fileno(), selectors.EVENT_READ, stream)

    def pump() -> None:
        failing = False
        try:
            while selector.get_map():
                for key, _ in selector.select():
                    chunk = os.read(key.fd, _READ_SIZE)
                    if not chunk:  # the job closed this stream
                        selector.unregister(key.fd)
                        continue
                    try:
                        output(key.data, chunk)
                    except Exception:
                        if not failing:  # said once; the spool counts what it loses
                            log.exception("cannot record the output of a job; it keeps running")
                        failing = True
        finally:
            selector.close()
            for pipe in pipes.values():
                pipe.close()

    thread = threading.Thread(target=pump, name="pump", daemon=True)
    thread.start()
    return thread


def _make_venv(
    job: JobLaunch, venv: Path, interpreter: Interpreter, *, system_site_packages: bool
) -> Path:
    """`python -m venv` (it installs pip) in the job dir; its output goes to the job's log."""
    result = run_venv_module(venv, interpreter, system_site_packages=system_site_packages)
    if result.stdout:
        job.output(LogStream.STDOUT, result.stdout)
    if result.stderr:
        job.output(LogStream.STDERR, result.stderr)
    if result.returncode != 0:
        raise JobStartError(
            f"cannot create a virtual environment with {interpreter.executable} "
            f"for workflow '{job.label}'",
            "check that the venv module is installed (Debian: apt-get install python3-venv)",
            reason=TerminationReason.EXECUTOR_ERROR,
        )
    return venv / "bin"
