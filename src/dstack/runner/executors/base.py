"""The executor interface: start a job, wait for it, stop or kill it, clean up after it.

Implementations: `ProcessExecutor` (host process group), `DockerExecutor` (a container), and
`FakeExecutor` (`executors/fake.py`: runs nothing, follows scripts, records what it was
asked). One contract suite (`tests/runner/executors/test_executor_contract.py`) runs against
each. Output goes to `JobLaunch.output` as (stream, bytes) as it comes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dstack.models.job import JobSpec, TerminationReason
from dstack.models.logs import LogStream

OutputSink = Callable[[LogStream, bytes], None]
Notice = Callable[[str], None]


@dataclass(frozen=True)
class JobLaunch:
    """Everything an executor needs to start one job on this host."""

    job_id: str
    run_name: str
    spec: JobSpec
    job_dir: Path
    code_dir: Path
    env: dict[str, str]
    output: OutputSink
    notice: Notice
    """Writes a message of the runner (warning, progress) into the job's log."""
    host_ports: list[int] = field(default_factory=list)
    gpu_indexes: list[int] = field(default_factory=list)
    mounts: dict[Path, str] = field(default_factory=dict)
    """Host folders of the job to bind at these container paths (`/output`, `/root/.cache`)."""

    @property
    def working_dir(self) -> Path:
        return self.code_dir / self.spec.working_dir

    @property
    def label(self) -> str:
        """How messages name the job: its workflow, else its provider."""
        return self.spec.workflow_name or self.spec.provider


@dataclass(frozen=True)
class RunnerIdentity:
    """Who owns what an executor leaves on the host: this runner, on this server.

    Docker containers are labelled with both. A name is not an identity: every local runner
    is called `local`, and two local servers (two users, two `DSTACK_HOME`s) may share an
    engine; ids are unique, and the server id tells two servers' runners apart.
    """

    runner_id: str
    server_id: str


@dataclass(frozen=True)
class ExitResult:
    """How a job's main process ended."""

    exit_code: int
    oom: bool = False

    @property
    def reason(self) -> TerminationReason:
        if self.oom:
            return TerminationReason.OOM
        return TerminationReason.DONE if self.exit_code == 0 else TerminationReason.EXIT_CODE


class JobHandle(Protocol):
    def wait(self, timeout: float | None = None) -> ExitResult | None:
        """Block up to `timeout` seconds (None: until it ends); None while it still runs.

        Returns only after the job's output was delivered in full. Safe to call again after
        the job ended (same result).
        """

    def stop(self, grace: float) -> None:
        """SIGTERM the job (every process of it), SIGKILL what is left after `grace` seconds.

        Blocks up to `grace` plus a little. A job that already ended: nothing happens.
        May be called from another thread than `wait`.
        """

    def kill(self) -> None:
        """SIGKILL every process of the job at once. Already ended: nothing happens."""

    def cleanup(self) -> None:
        """Release what the job holds (container, temp files). Idempotent; kills if running."""


class Executor(Protocol):
    name: str

    def start(self, job: JobLaunch) -> JobHandle:
        """Start the job and return at once (image pulls and venvs happen before returning).

        Raises `JobStartError` with the termination reason when it cannot start.
        """

    def reconcile(self, owner: RunnerIdentity, owned_job_ids: set[str]) -> None:
        """Work for `owner` from now on, and remove what earlier runs of that same runner (same
        runner id and server id, nothing else) left behind for jobs not in `owned_job_ids`.

        Called after each registration, before any `start`; what is already gone is skipped.
        """


def script_of(commands: list[str]) -> str:
    """The bash script of a job: its commands in order, one per line, under `set -e`.

    Like the early dstack, the first command that fails ends the job with its exit code;
    all commands share one shell, so `cd` and `export` carry over to the next.
    """
    return "set -e\n" + "\n".join(commands) + "\n"


def command_of(spec: JobSpec) -> list[str] | None:
    """The argv of a job: `entrypoint` (or `bash -c`) taking the script; None: image default."""
    if not spec.commands:
        return list(spec.entrypoint) if spec.entrypoint else None
    entrypoint = list(spec.entrypoint) if spec.entrypoint else ["bash", "-c"]
    return [*entrypoint, script_of(spec.commands)]
