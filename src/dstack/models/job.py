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
    retry: int = Field(0, ge=0, description="Re-queue this many times after runner_lost.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only runners with all these labels take the job."
    )


class StatusChange(Model):
    status: JobStatus
    at: datetime
    reason: TerminationReason | None = None
    message: str | None = None


class JobTimings(Model):
    """Seconds spent in each phase; None for a phase the job never reached."""

    queued: float | None = None
    provisioning: float | None = None
    downloading: float | None = None
    running: float | None = None
    uploading: float | None = None


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
