"""Server test helpers: a real database (SQLite in a temp dir, or PostgreSQL), a clock tests
move by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.infra.fixtures import Postgres, moto_s3, postgres, s3_bucket

from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec, JobStatus
from dstack.models.protocol import (
    JobStatusUpdate,
    JobSubmission,
    RegisterRunnerRequest,
    SubmitRunRequest,
)
from dstack.models.repo import RepoRef
from dstack.models.resources import GpuInfo, GpuRequest, HostResources, ResourcesSpec
from dstack.models.workflow import ArtifactSpec, DepRef
from dstack.server.app import running_context
from dstack.server.context import ServerContext
from dstack.server.services import artifacts, claims
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.settings import ServerSettings
from dstack.storage.base import BlobStore
from dstack.storage.memory import MemoryBlobStore

__all__ = ["moto_s3", "postgres", "s3_bucket"]  # fixtures, shared with this folder's tests


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """The database of the test's server: SQLite in its home (None), or a fresh database on
    the session's PostgreSQL cluster. Every test that builds a server runs on both."""
    if request.param == "sqlite":
        yield None
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    name, url = postgres.new_database()
    try:
        yield url
    finally:
        postgres.drop(name)


@pytest.fixture
def settings(tmp_path: Path, db_url: str | None) -> ServerSettings:
    return ServerSettings(
        home=tmp_path / "home",
        token="secret-token",
        user="alice",
        runner_token="runner-token",
        database_url=db_url,
    )


@pytest.fixture
async def ctx(settings: ServerSettings, clock: FakeClock) -> AsyncIterator[ServerContext]:
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False
    ) as context:
        yield context


def job(
    *,
    deps: list[int] | None = None,
    cpu: int | None = None,
    memory_mib: int | None = None,
    gpus: int = 0,
    gpu_name: str | None = None,
    name: str = "train",
) -> JobSubmission:
    gpu = GpuRequest(count=gpus, name=gpu_name) if gpus else None
    resources = ResourcesSpec(cpu=cpu, memory_mib=memory_mib, gpu=gpu)
    spec = JobSpec(provider="bash", commands=["echo hi"], resources=resources, workflow_name=name)
    return JobSubmission(workflow_name=name, spec=spec, deps=deps or [])


def submission(*jobs: JobSubmission, repo_id: str = "github.com/acme/models") -> SubmitRunRequest:
    repo = RepoRef(repo_id=repo_id, tree="0" * 40, commit="1" * 40, branch="main")
    return SubmitRunRequest(repo=repo, workflow_name="train", jobs=list(jobs) or [job()])


def host(
    cpus: int = 2, memory_gb: int = 24, gpus: list[tuple[str, int]] | None = None
) -> HostResources:
    return HostResources(
        cpus=cpus,
        memory_mib=memory_gb * 1024,
        disk_mib=100 * 1024,
        gpus=[GpuInfo(index=i, name=n, memory_mib=m) for i, (n, m) in enumerate(gpus or [])],
    )


async def register(
    ctx: ServerContext, name: str = "local", resources: HostResources | None = None
) -> str:
    """Register runner `name` as `dstack-runner` does: the first time with a registration
    token (a new runner), later with the runner's own credential (it restarted: same id, the
    jobs it held kept for it to report). Returns the runner's id."""
    request = RegisterRunnerRequest(
        name=name, host="localhost", resources=resources or host(), executors=["process"]
    )
    known = {r.name: r.id for r in await runner_service.list_runners(ctx)}
    answer = await runner_service.register(ctx, runner_id=known.get(name), request=request)
    return answer.runner_id


async def register_over_http(
    http: httpx.AsyncClient, registration_token: str, name: str = "r1"
) -> tuple[str, dict[str, str]]:
    """Register a new runner with a registration token, as `dstack-runner start` does; returns
    its id and the headers that carry its own credential (which every later request uses)."""
    body = {
        "name": name,
        "host": "h",
        "resources": {"cpus": 1, "memory_mib": 1024, "disk_mib": 1024},
        "executors": ["process"],
    }
    headers = {"Authorization": f"Bearer {registration_token}"}
    answer = await http.post("/api/runners/register", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    registered = answer.json()
    return registered["runner_id"], {"Authorization": f"Bearer {registered['runner_token']}"}


# --- artifacts ------------------------------------------------------------------------------
def art_job(
    name: str = "train",
    *,
    deps: list[int] | None = None,
    code_key: str = "tree-1",
    commands: list[str] | None = None,
    env: dict[str, str] | None = None,
    artifacts: list[str] | None = None,
    external: list[DepRef] | None = None,
    cpu: int | None = None,
    cache: list[str] | None = None,
) -> JobSubmission:
    """A job that declares artifacts (so it is cacheable) unless `artifacts=[]`, and the
    workflow cache paths `cache`."""
    spec = JobSpec(
        provider="bash",
        workflow_name=name,
        commands=commands or [f"python {name}.py"],
        env=env or {},
        artifacts=[ArtifactSpec(path=p) for p in (["out"] if artifacts is None else artifacts)],
        resources=ResourcesSpec(cpu=cpu),
        cache=cache or [],
    )
    return JobSubmission(
        workflow_name=name,
        spec=spec,
        deps=deps or [],
        code_key=code_key,
        external_deps=external or [],
    )


def stored_manifest(blobs: BlobStore, path: str = "out", content: bytes = b"weights") -> Manifest:
    """A manifest of one file whose blob is in `blobs`."""
    digest = digest_bytes(content)
    blobs.put_bytes(content, digest)
    entry = FileEntry(path="model.bin", size=len(content), mode=0o644, digest=digest)
    return Manifest(path=path, files=[entry])


async def run_to_done(
    ctx: ServerContext, runner_id: str, *, content: bytes = b"weights"
) -> list[str]:
    """Claim every runnable job in turn, post one manifest per declared artifact path and
    report it done. Returns the ids of the jobs it ran."""
    ran = []
    while (assignment := await claims.try_claim(ctx, runner_id=runner_id)) is not None:
        for spec in assignment.spec.artifacts:
            manifest = stored_manifest(ctx.blobs, spec.path, content)
            await artifacts.save_manifest(
                ctx, job_id=assignment.job_id, manifest=manifest, runner_id=runner_id
            )
        for status in (JobStatus.RUNNING, JobStatus.UPLOADING, JobStatus.DONE):
            await job_service.report_status(
                ctx,
                job_id=assignment.job_id,
                update=JobStatusUpdate(status=status),
                runner_id=runner_id,
            )
        ran.append(assignment.job_id)
    return ran
