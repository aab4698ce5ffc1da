"""Runners: register, heartbeat, list; which of their jobs to stop, abort or forget."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import NotFoundError
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.resources import HostResources
from dstack.models.runner import Runner, RunnerStatus
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import JobRow, LogRow, RunnerRow
from dstack.server.services import jobs as job_service

ACTIVE_STATUSES = [s.value for s in JobStatus if s.is_active()]


async def register(ctx: ServerContext, *, request: RegisterRunnerRequest) -> RegisterRunnerResponse:
    """Create or update the runner (matched by `runner_id`, else by name) and mark it ready.

    A runner registering without its id has restarted: jobs it held are lost.
    """
    now = ctx.clock()
    async with ctx.transaction() as session:
        row = await _find(session, request)
        if row is None:
            row = RunnerRow(id=uuid.uuid4().hex, registered_at=now, backend="local")
            session.add(row)
        else:
            await _fail_active_jobs(ctx, session, row, f"runner '{row.name}' restarted")
        row.name = request.name
        row.host = request.host
        row.resources = request.resources.model_dump(mode="json")
        row.executors = list(request.executors)
        row.labels = dict(request.labels)
        row.status = RunnerStatus.READY.value
        row.last_heartbeat = now
        mark_changed(session, work=True)
        return RegisterRunnerResponse(runner_id=row.id)


async def _find(session: AsyncSession, request: RegisterRunnerRequest) -> RunnerRow | None:
    return await session.scalar(select(RunnerRow).where(RunnerRow.name == request.name))


async def require_runner(session: AsyncSession, runner_id: str) -> RunnerRow:
    row = await session.get(RunnerRow, runner_id)
    if row is None:
        raise NotFoundError(
            f"runner {runner_id} is not registered", hint="the runner must register again"
        )
    return row


async def active_jobs(session: AsyncSession, runner_id: str) -> Sequence[JobRow]:
    query = select(JobRow).where(JobRow.runner_id == runner_id, JobRow.status.in_(ACTIVE_STATUSES))
    return (await session.scalars(query)).all()


async def heartbeat(
    ctx: ServerContext, *, runner_id: str, request: HeartbeatRequest
) -> HeartbeatResponse:
    """Record that the runner is alive; tell it which of its jobs to stop or abort, and which
    jobs it reports that are no longer its own (finished, deleted, given to another)."""
    async with ctx.transaction() as session:
        runner = await require_runner(session, runner_id)
        runner.last_heartbeat = ctx.clock()
        if runner.status == RunnerStatus.OFFLINE.value:
            runner.status = RunnerStatus.READY.value
            mark_changed(session, work=True)
        jobs = await active_jobs(session, runner_id)
    mine = {j.id for j in jobs}
    return HeartbeatResponse(
        stop_jobs=[j.id for j in jobs if j.stop_requested == "stop"],
        abort_jobs=[j.id for j in jobs if j.stop_requested == "abort"],
        forget_jobs=[job_id for job_id in request.running_jobs if job_id not in mine],
    )


async def list_runners(ctx: ServerContext) -> list[Runner]:
    async with ctx.transaction() as session:
        rows = (await session.scalars(select(RunnerRow).order_by(RunnerRow.name))).all()
        held = (
            await session.execute(
                select(JobRow.runner_id, JobRow.id).where(JobRow.status.in_(ACTIVE_STATUSES))
            )
        ).all()
    jobs: dict[str, list[str]] = {}
    for runner_id, job_id in held:
        jobs.setdefault(runner_id or "", []).append(job_id)
    return [_to_model(row, jobs.get(row.id, [])) for row in rows]


def _to_model(row: RunnerRow, running: list[str]) -> Runner:
    status = RunnerStatus(row.status)
    if status is RunnerStatus.READY and running:
        status = RunnerStatus.BUSY
    return Runner(
        id=row.id,
        name=row.name,
        host=row.host,
        resources=HostResources.model_validate(row.resources),
        executors=list(row.executors),
        labels=dict(row.labels),
        backend=row.backend,
        status=status,
        last_heartbeat=row.last_heartbeat,
        running_jobs=running,
    )


async def mark_lost_runners(ctx: ServerContext, session: AsyncSession) -> None:
    """Runners silent for longer than the heartbeat timeout go offline; their jobs fail.

    Silence is counted from this server's start at the earliest: while the server was down
    (a restart, an upgrade) runners could not reach it, and that is not their fault.
    """
    cutoff = _lost_cutoff(ctx)
    if cutoff is None:
        return
    rows = (await session.scalars(select(RunnerRow).where(*_lost(cutoff)))).all()
    for runner in rows:
        runner.status = RunnerStatus.OFFLINE.value
        mark_changed(session, work=True)
        await _fail_active_jobs(
            ctx, session, runner, f"runner '{runner.name}' stopped sending heartbeats"
        )


async def any_lost_runners(ctx: ServerContext, session: AsyncSession) -> bool:
    """Whether `mark_lost_runners` would find a runner to take offline now."""
    cutoff = _lost_cutoff(ctx)
    if cutoff is None:
        return False
    found = await session.scalar(select(RunnerRow.id).where(*_lost(cutoff)).limit(1))
    return found is not None


def _lost_cutoff(ctx: ServerContext) -> datetime | None:
    """Heartbeats older than this are lost; None while the server is younger than that."""
    cutoff = ctx.clock() - timedelta(seconds=ctx.settings.runner_heartbeat_timeout)
    return None if cutoff < ctx.started_at else cutoff


def _lost(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    return (RunnerRow.status != RunnerStatus.OFFLINE.value, RunnerRow.last_heartbeat < cutoff)


async def _fail_active_jobs(
    ctx: ServerContext, session: AsyncSession, runner: RunnerRow, message: str
) -> None:
    """The runner's jobs are lost: re-queue those whose `spec.retry` allows another attempt,
    fail the others with `runner_lost`."""
    for job in await active_jobs(session, runner.id):
        if not await _requeue(ctx, session, job, message):
            await job_service.set_status(
                session,
                job,
                JobStatus.FAILED,
                now=ctx.clock(),
                reason=TerminationReason.RUNNER_LOST,
                message=message,
            )


async def _requeue(ctx: ServerContext, session: AsyncSession, job: JobRow, message: str) -> bool:
    """Back to `submitted` for another runner, when attempts are left; False otherwise.

    The history keeps the `runner_lost` entry (it is what counts attempts). The lost
    attempt's log lines are dropped: the next attempt numbers its lines from 0 again, and
    mixing the two would garble both. The old runner, should it come back, is told to forget
    the job (it is no longer its own) and its late reports get 409.
    """
    done = job_service.attempts(job_service.history(job))
    retry = JobSpec.model_validate(job.spec).retry
    if done >= retry or job.stop_requested:
        return False
    note = f"{message}; re-queued (attempt {done + 2} of {retry + 1})"
    requeued = await job_service.set_status(
        session,
        job,
        JobStatus.SUBMITTED,
        now=ctx.clock(),
        reason=TerminationReason.RUNNER_LOST,
        message=note,
        runner_id=None,
        gpu_indexes=[],
        host_ports=[],
        stop_requested=None,
    )
    if requeued:
        await session.execute(delete(LogRow).where(LogRow.job_id == job.id))
    return requeued
