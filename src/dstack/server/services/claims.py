"""Claims: a runner long-polls for the oldest runnable job that fits what it has free."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.artifacts import DepArtifacts, StorageAccess
from dstack.models.job import JobSpec, JobStatus
from dstack.models.protocol import JobAssignment
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.models.runner import RunnerStatus
from dstack.server.context import Notifier, ServerContext
from dstack.server.db.models import JobRow, RunnerRow, RunRow
from dstack.server.scheduler.matching import Allocation, allocate, cpu_slots, free_resources
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services.artifacts import job_artifacts
from dstack.server.services.workflow_caches import caches_for
from dstack.storage.base import BlobStore
from dstack.storage.local import LocalBlobStore

WAITING_STATUSES = [JobStatus.SUBMITTED.value, JobStatus.PENDING.value]


async def claim(ctx: ServerContext, *, runner_id: str, wait_seconds: float) -> JobAssignment | None:
    """Assign a job to the runner, waiting up to `wait_seconds` for one; None if none came.

    Wakes as soon as anything changes (a submit, a finished dependency, a freed slot).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        event = ctx.notifier.current()
        assignment = await try_claim(ctx, runner_id=runner_id)
        remaining = deadline - loop.time()
        if assignment is not None or remaining <= 0:
            return assignment
        await Notifier.wait(event, min(remaining, ctx.settings.scheduler_interval))


async def try_claim(ctx: ServerContext, *, runner_id: str) -> JobAssignment | None:
    """One attempt, no waiting.

    The status change is guarded by the job's version, so two servers (or two runners) racing
    for the same job cannot both get it; the lock only avoids needless lost races here.
    """
    async with ctx.claim_lock, ctx.transaction() as session:
        runner = await runner_service.require_runner(session, runner_id)
        _touch(ctx, runner)
        host = HostResources.model_validate(runner.resources)
        held = [_allocation(j) for j in await runner_service.active_jobs(session, runner_id)]
        free = free_resources(host, held)
        for job in await _runnable(session):
            allocation = allocate(JobSpec.model_validate(job.spec).resources, free)
            if allocation is None:
                continue
            claimed = await job_service.set_status(
                session,
                job,
                JobStatus.PROVISIONING,
                now=ctx.clock(),
                message=f"assigned to runner '{runner.name}'",
                runner_id=runner.id,
                gpu_indexes=list(allocation.gpu_indexes),
            )
            if claimed:
                return await _assignment(ctx, session, job)
    return None


def _touch(ctx: ServerContext, runner: RunnerRow) -> None:
    # A runner asking for work is alive, whatever its last heartbeat said.
    runner.last_heartbeat = ctx.clock()
    runner.status = RunnerStatus.READY.value


def _allocation(job: JobRow) -> Allocation:
    resources = JobSpec.model_validate(job.spec).resources
    return Allocation(cpu_slots(resources), resources.memory_mib or 0, tuple(job.gpu_indexes))


async def _runnable(session: AsyncSession) -> list[JobRow]:
    """Waiting jobs whose dependencies are all done, oldest first."""
    waiting = (
        await session.scalars(
            select(JobRow)
            .where(JobRow.status.in_(WAITING_STATUSES))
            .order_by(JobRow.submitted_at, JobRow.run_name, JobRow.index)
        )
    ).all()
    statuses = await dependency_statuses(session, waiting)
    return [
        job
        for job in waiting
        if all(statuses.get((job.run_name, d)) == JobStatus.DONE.value for d in job.deps)
    ]


async def dependency_statuses(
    session: AsyncSession, jobs: Sequence[JobRow]
) -> dict[tuple[str, int], str]:
    """(run name, job index) → status, for every job of the runs of `jobs` that has deps."""
    runs = {j.run_name for j in jobs if j.deps}
    if not runs:
        return {}
    rows = await session.execute(
        select(JobRow.run_name, JobRow.index, JobRow.status).where(JobRow.run_name.in_(runs))
    )
    return {(run, index): status for run, index, status in rows}


async def _assignment(ctx: ServerContext, session: AsyncSession, job: JobRow) -> JobAssignment:
    run = await session.get(RunRow, job.run_name)
    assert run is not None
    return JobAssignment(
        job_id=job.id,
        run_name=job.run_name,
        job_index=job.index,
        spec=JobSpec.model_validate(job.spec),
        repo=RepoRef.model_validate(run.repo),
        gpu_indexes=list(job.gpu_indexes),
        deps=await dependency_artifacts(session, job),
        caches=await caches_for(session, run.repo_id, job.workflow_name),
        storage=storage_access(ctx.blobs),
    )


async def dependency_artifacts(session: AsyncSession, job: JobRow) -> list[DepArtifacts]:
    """What the job must find in its working dir: the artifacts of its in-run dependencies
    (or of the jobs they reused), then those of its tags and `X:latest` deps."""
    inner: list[DepArtifacts] = []
    if job.deps:
        rows = (
            await session.scalars(
                select(JobRow)
                .where(JobRow.run_name == job.run_name, JobRow.index.in_(job.deps))
                .order_by(JobRow.index)
            )
        ).all()
        inner = [
            DepArtifacts.model_validate(a.model_dump()) for a in await job_artifacts(session, rows)
        ]
    outer = [DepArtifacts.model_validate(a) for a in job.external_artifacts or []]
    return inner + outer


def storage_access(store: BlobStore) -> StorageAccess:
    """A local store is read and written in place by runners on this machine; any other
    store through the server's blob endpoints."""
    if isinstance(store, LocalBlobStore):
        return StorageAccess(kind="local", path=str(store.root.resolve()))
    return StorageAccess(kind="http")
