"""Jobs: what to run (`JobSpec`), and what happened to it (`Job`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from dstack.models.common import Model
from dstack.models.paths import DeclaredPath
from dstack.models.resources import ResourcesSpec
from dstack.models.workflow import ArtifactSpec, RegistryAuth


class JobStatus(StrEnum):
    SUBMITTED = "submitted"
    PENDING = "pending"
    PROVISIONING = "provisioning"
    DOWNLOADING = "downloading"
    RUNNING = "running"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    ABORTED = "aborted"

    def is_finished(self) -> bool:
        return self in _FINISHED

    def is_active(self) -> bool:
        """Holding a runner: claimed and not finished."""
        return self in _ACTIVE


_FINISHED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.ABORTED})
_ACTIVE = frozenset(
    {JobStatus.PROVISIONING, JobStatus.DOWNLOADING, JobStatus.RUNNING, JobStatus.UPLOADING}
)


class TerminationReason(StrEnum):
    """Why a job is in a terminal state (or, for `pending`, why it waits)."""

    DONE = "done"
    CACHED = "cached"
    EXIT_CODE = "exit_code"
    OOM = "oom"
    DISK_FULL = "disk_full"
    RUNNER_LOST = "runner_lost"
    INTERRUPTED = "interrupted"
    NO_CAPACITY = "no_capacity"
    IMAGE_PULL = "image_pull"
    EXECUTOR_ERROR = "executor_error"
    STOPPED_BY_USER = "stopped_by_user"
    ABORTED_BY_USER = "aborted_by_user"
    DEPENDENCY_FAILED = "dependency_failed"
    # A state outlived its limit (`ServerSettings`, "Deadlines" in docs/server.md): the
    # message names the state and the limit.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    WAITING_FOR_DEPENDENCIES = "waiting_for_dependencies"
    WAITING_FOR_RUNNER = "waiting_for_runner"
    # `pending` while a cloud instance is being created for the job (the message names the
    # instance type, market, price and backend); `pending` with `no_capacity` while it
    # waits for a cloud to have capacity again.
    WAITING_FOR_INSTANCE = "waiting_for_instance"
    # A job of a multi-node run stopped because another node of it ended without success
    # (the message names the node: `node 1 failed: exit code 3`).
    NODE_FAILED = "node_failed"


class PortSpec(Model):
    port: int | None = Field(None, description="Fixed port; None: the runner allocates one.")


class AppSpec(Model):
    """A web app the job serves: shown to the user as a URL once it answers."""

    name: str
    port_index: int = Field(description="Index into the job's ports.")
    url_path: str = "/"
    url_query: dict[str, str] = Field(default_factory=dict)


class JobSpec(Model):
    """Everything a runner needs to run one job, independent of where it runs."""

    workflow_name: str | None = None
    provider: str
    image: str | None = Field(None, description="Container image; None: the runner's default.")
    commands: list[str] = Field(default_factory=list, description="Run with bash, in order.")
    entrypoint: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str = Field(".", description="Relative to the repository root.")
    python: str | None = None
    requirements: str | None = None
    artifacts: list[ArtifactSpec] = Field(default_factory=list)
    cache: list[DeclaredPath] = Field(default_factory=list)
    ports: list[PortSpec] = Field(default_factory=list)
    apps: list[AppSpec] = Field(default_factory=list)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    registry_auth: RegistryAuth | None = None
    triggers: list[str] = Field(default_factory=list)
    retry: int | None = Field(
        None,
        ge=0,
        description="Re-queues allowed after `runner_lost` or `interrupted`, together; None: "
        "the workflow set none (`retry_limit` gives the default).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only runners with all these labels take the job."
    )
    node_rank: int = Field(
        0,
        ge=0,
        description="Its node in a multi-node run (`resources.nodes` > 1): the run's jobs "
        "`index - node_rank` .. `+ nodes - 1` are its gang, started together; 0 is the primary.",
    )


def gang_indexes(index: int, spec: JobSpec) -> range:
    """The job indexes of the gang of job `index` (itself alone for a one-node job)."""
    first = index - spec.node_rank
    return range(first, first + max(spec.resources.nodes, 1))


# Re-queues allowed after an interruption when the workflow sets no `retry` and may run on
# interruptible (spot) capacity: a spot job is expected to be interrupted now and then.
DEFAULT_INTERRUPTIBLE_RETRY = 3
# What ends an attempt and counts against `JobSpec.retry` when the job is re-queued.
RETRIED_REASONS = frozenset({TerminationReason.RUNNER_LOST, TerminationReason.INTERRUPTED})


def retry_limit(spec: JobSpec, reason: TerminationReason) -> int:
    """Re-queues `spec` allows in all, when an attempt ended with `reason`.

    The workflow's `retry` when it set one; else `DEFAULT_INTERRUPTIBLE_RETRY` for an
    interruption of an `interruptible` job, 0 otherwise (a lost runner of a job that did not
    ask for retries fails it, as before).
    """
    if spec.resources.nodes > 1:  # a node alone cannot rejoin its gang: it fails
        return 0
    if spec.retry is not None:
        return spec.retry
    if reason is TerminationReason.INTERRUPTED and spec.resources.interruptible:
        return DEFAULT_INTERRUPTIBLE_RETRY
    return 0


class StatusChange(Model):
    status: JobStatus
    at: datetime
    reason: TerminationReason | None = None
    message: str | None = None
    runner: str | None = Field(
        None, description="The runner that claimed the job (on the claim's `provisioning`)."
    )
    log_from: int | None = Field(
        None,
        description="On a re-queue: the first log seq of the next attempt; the lines below "
        "it are the earlier attempts' (kept after an interruption).",
    )


class Attempt(Model):
    """One claim of a job, from its history: where it ran and how it ended."""

    number: int = Field(description="From 1.")
    runner: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    status: JobStatus = Field(description="Its last status (`submitted`: it was re-queued).")
    reason: TerminationReason | None = None
    message: str | None = None


def job_attempts(changes: list[StatusChange]) -> list[Attempt]:
    """Each claim (a `provisioning` entry) starts an attempt; the next re-queue or terminal
    status ends it. A job never claimed (cached, or still waiting) has none."""
    attempts: list[Attempt] = []
    for change in changes:
        if change.status is JobStatus.PROVISIONING:
            attempts.append(
                Attempt(
                    number=len(attempts) + 1,
                    runner=change.runner,
                    started_at=change.at,
                    status=change.status,
                )
            )
        elif attempts and attempts[-1].ended_at is None:
            current = attempts[-1]
            current.status = change.status
            if change.status in (JobStatus.SUBMITTED, JobStatus.PENDING) or (
                change.status.is_finished()
            ):
                current.ended_at = change.at
                current.reason = change.reason
                current.message = change.message
    return attempts


class JobTimings(Model):
    """Seconds spent in each phase; None for a phase the job never reached."""

    queued: float | None = None
    provisioning: float | None = None
    downloading: float | None = None
    running: float | None = None
    uploading: float | None = None


def held_seconds(timings: JobTimings) -> float:
    """Seconds a job held its runner: its active phases (what a cloud runner's cost counts)."""
    t = timings
    return sum(s or 0.0 for s in (t.provisioning, t.downloading, t.running, t.uploading))


class JobInstance(Model):
    """The cloud instance a job holds (or waits for), as `dstack ps RUN` shows it."""

    name: str
    backend: str
    instance_type: str
    spot: bool
    price: float = Field(description="USD per hour.")
    state: str


class Job(Model):
    id: str
    run_name: str
    index: int = Field(description="Position of the job in its run, from 0.")
    workflow_name: str | None
    spec: JobSpec
    deps: list[int] = Field(default_factory=list, description="Indexes of jobs it waits for.")
    status: JobStatus
    reason: TerminationReason | None = None
    message: str | None = Field(None, description="Human detail for the reason.")
    exit_code: int | None = None
    runner_id: str | None = None
    runner_name: str | None = None
    gpu_indexes: list[int] = Field(default_factory=list)
    host_ports: list[int] = Field(default_factory=list, description="Ports published, in order.")
    apps_ready_at: datetime | None = Field(
        None, description="When every app of the job first answered on its port."
    )
    cache_key: str | None = None
    reused_from: str | None = Field(None, description="Run whose results this job reuses.")
    cache_reason: str | None = Field(
        None,
        description="Why the job ran, or `cached`: the cache's decision at submit, as "
        "`dstack plan` explains it (none for runs from before it was kept, or imported).",
    )
    history: list[StatusChange] = Field(default_factory=list)
    timings: JobTimings = Field(default_factory=JobTimings)
    submitted_at: datetime
    finished_at: datetime | None = None
    attempt: int = Field(0, description="Re-queues so far (see `JobSpec.retry`).")
    instance: JobInstance | None = Field(
        None, description="The cloud instance it runs on, or the one being created for it."
    )
    cost: float | None = Field(
        None, description="USD: price x time it held a cloud runner; None: no cloud runner."
    )
