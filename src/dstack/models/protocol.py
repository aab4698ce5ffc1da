"""Request and response bodies of the server's HTTP API.

The server, the typed client (`dstack.api`) and the runner all use these; the endpoint list
is in `docs/api.md`. The bodies of the run endpoints live in `dstack.models.runs_api` (the
CLI's start defines only those) and are re-exported here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from dstack.models.artifacts import (
    DepArtifacts,
    JobArtifacts,
    Manifest,
    StorageAccess,
)
from dstack.models.bounds import INT32_MAX, JOB_ID_MAX, ExitCode, Port, Text
from dstack.models.common import Model
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.logs import LogStream
from dstack.models.names import (
    RunnerName,
    SecretName,
    SecretValue,
    TagName,
    UserName,
    check_name_message,
    name_problem,
)
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.models.run import Run
from dstack.models.runs_api import JobSubmission as JobSubmission
from dstack.models.runs_api import LogsPage as LogsPage
from dstack.models.runs_api import MissingBlobsRequest as MissingBlobsRequest
from dstack.models.runs_api import MissingBlobsResponse as MissingBlobsResponse
from dstack.models.runs_api import NameRef as NameRef
from dstack.models.runs_api import PlanResponse as PlanResponse
from dstack.models.runs_api import RerunRequest as RerunRequest
from dstack.models.runs_api import StopRunRequest as StopRunRequest
from dstack.models.runs_api import SubmitRunRequest as SubmitRunRequest
from dstack.models.runs_api import TagRef as TagRef
from dstack.models.runs_api import TagRequest as TagRequest

# --- users (the run endpoints' bodies are in `dstack.models.runs_api`) ---------------------


class UploadRunRequest(Model):
    """`dstack tags add TAG -a PATH...`: local folders become a finished, tagged run."""

    tag: TagName
    repo: RepoRef
    manifests: list[Manifest] = Field(min_length=1, description="Blobs uploaded beforehand.")


# --- runners -------------------------------------------------------------------------------
class RegisterRunnerRequest(Model):
    name: RunnerName
    host: str = Field(max_length=200)
    address: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[A-Za-z0-9.:%\-\[\]]+$",
        description="An address other runners reach this one at (multi-node runs: the "
        "primary node's is the others' `MASTER_ADDR`); None: an older runner (`host` is used).",
    )
    resources: HostResources
    executors: list[Text]
    labels: dict[Text, Text] = Field(default_factory=dict)


class RegisterRunnerResponse(Model):
    """Sent with a registration token: a new runner, and its own credential (shown this once).
    Sent again with that credential (a restarted runner): the same runner, `runner_token` None.
    """

    runner_id: str
    runner_token: str | None = Field(
        None, description="The runner's own credential; every later request carries it."
    )
    server_id: str = Field("", description="The server's id; runners label containers with it.")


class HeartbeatRequest(Model):
    running_jobs: list[Text] = Field(description="Ids of the jobs the runner is executing.")
    disk_free_mib: int | None = Field(
        None,
        ge=0,
        le=1 << 40,
        description="Free space of the folder the runner's jobs live in, in MiB; None: not "
        "measured (an older runner). Below the runner's `min_free_disk_mib` it gets no job.",
    )


class HeartbeatResponse(Model):
    stop_jobs: list[str] = Field(default_factory=list, description="Stop gracefully.")
    abort_jobs: list[str] = Field(default_factory=list, description="Kill at once.")
    forget_jobs: list[str] = Field(
        default_factory=list, description="Jobs the server no longer gives this runner."
    )
    idle_interval: float | None = Field(
        None,
        description="Seconds the runner may wait before its next heartbeat while it runs no "
        "job (a third of the server's runner timeout); None: its own interval.",
    )


class ClaimRequest(Model):
    wait_seconds: float = Field(10.0, ge=0, le=60, description="Long-poll for this long.")


class NodeInfo(Model):
    """Where a job stands in its multi-node run, and how its nodes reach the primary."""

    rank: int = Field(0, ge=0, description="This job's node, from 0 (the primary).")
    nodes: int = Field(1, ge=1, description="Nodes of the run's gang.")
    master_address: str = Field(
        "127.0.0.1", max_length=200, description="The primary's runner address."
    )
    master_port: int = Field(29500, ge=1, le=65535)
    master_job_id: str = Field("", description="The primary's job id.")


class JobAssignment(Model):
    """A job handed to a runner: everything it needs to fetch, run and report it."""

    job_id: str
    run_name: str
    job_index: int
    spec: JobSpec
    repo: RepoRef
    gpu_indexes: list[int] = Field(default_factory=list)
    secrets: dict[str, str] = Field(default_factory=dict)
    deps: list[DepArtifacts] = Field(
        default_factory=list, description="Place these in the working dir before running."
    )
    caches: list[Manifest] = Field(
        default_factory=list, description="Saved workflow caches to restore before running."
    )
    resume: list[Manifest] = Field(
        default_factory=list,
        description="A re-queued job's own artifacts, as its earlier attempt synced them: "
        "place them at their paths before running (checkpoints to resume from).",
    )
    storage: StorageAccess = Field(default_factory=StorageAccess)
    node: NodeInfo | None = Field(
        None, description="Its place in a multi-node run; None: an older server (one node)."
    )


class JobStatusUpdate(Model):
    status: JobStatus
    reason: TerminationReason | None = None
    message: str | None = Field(None, max_length=64 * 1024)
    exit_code: ExitCode | None = None
    host_ports: list[Port] | None = None
    apps_ready: bool | None = Field(
        None, description="True: every app of the running job answers on its port."
    )
    next_job: bool | None = Field(
        None,
        description="True, on a final status: the answer carries the runner's next job "
        "(200, a `JobAssignment`), claimed as `POST /api/runners/{id}/claim` would without "
        "waiting, or none (204). None: answered 204 (an older runner's final status).",
    )


class LogLine(Model):
    seq: int = Field(
        ge=0, le=INT32_MAX, description="Position in the job's log from 0; resending is harmless."
    )
    timestamp: datetime
    stream: LogStream
    data: str


class LogBatch(Model):
    lines: list[LogLine]


# --- teams: users, runner tokens, secrets ----------------------------------------------------
class User(Model):
    """A user as the server shows it (a name stored before the name rule is still listed)."""

    name: str
    is_admin: bool = False
    repos: list[str] | None = Field(
        None, description="repo_ids this user may see; None: every repository."
    )
    created_at: datetime


class CreateUserRequest(Model):
    name: UserName
    is_admin: bool = False
    repos: list[Text] | None = None


class CreateUserResponse(Model):
    user: User
    token: str = Field(description="Shown once; the server keeps only its hash.")


class RunnerTokenResponse(Model):
    token: str


class Secret(Model):
    """A secret's name and dates; the value never leaves the server except to a job."""

    name: str
    repo_id: str | None = Field(
        None, description="Its repository; None: global (every repository's jobs get it)."
    )
    created_at: datetime
    updated_at: datetime


class SecretRequest(Model):
    name: SecretName
    value: SecretValue = Field(description="At most 64 KiB (UTF-8), no NUL character.")
    repo_id: str | None = Field(
        None, description="The repository whose jobs get it; None: global (admins only)."
    )


# --- storage without passing bytes through the server -----------------------------------------
class PresignRequest(Model):
    digests: list[Text]
    method: str = Field("GET", max_length=8, description="`GET` or `PUT`.")


class PresignResponse(Model):
    urls: dict[str, str] = Field(description="digest → URL, valid for a limited time.")


# --- moving runs between servers (push/pull) --------------------------------------------------
class ImportRunRequest(Model):
    """A finished run and its artifacts, copied from another server (blobs uploaded first)."""

    run: Run
    artifacts: list[JobArtifacts]

    @field_validator("run")
    @classmethod
    def _bounded(cls, run: Run) -> Run:
        """The imported run's names follow the rule a run made here follows; its numbers fit
        the server's columns."""
        named = [("run", run.name), ("tag", run.tag), ("workflow", run.workflow_name)]
        for kind, value in named:
            if value is not None and name_problem(value) is not None:
                raise ValueError(check_name_message(value, kind))
        counter = run.name.rpartition("-")[2]  # `wise-owl-3`: names drawn later count on
        if counter.isdigit() and int(counter) > INT32_MAX:
            raise ValueError(f"run name {run.name!r}: its number is out of range")
        for job in run.jobs:
            numbers = [job.index, job.attempt, job.exit_code or 0, *job.deps]
            if len(job.id) > JOB_ID_MAX or not all(abs(n) <= INT32_MAX for n in numbers):
                raise ValueError(f"job {job.id[:40]!r}: an id or a number out of range")
        return run
