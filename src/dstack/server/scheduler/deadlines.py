"""Deadlines: a job a live runner leaves in one state for too long ends final, with a reason
and a message naming the state and the limit.

A runner that stops heartbeating loses its jobs whatever their state (`runners.
mark_lost_runners`); these deadlines cover the runner that is alive but never moves a job on:

- `provisioning`: the runner never confirmed its claim (`downloading` or `running`), most
  likely because the claim's answer was lost on the way. The job goes back to the queue
  once (`deadline_exceeded`, not counted against `retry`: it never started) and fails
  with `runner_lost` the second time.
- `downloading`, `uploading`: the code, the inputs or the final artifact upload hang. The job
  fails with `deadline_exceeded`; the artifacts synced so far stay listed.

`running` has none: a job may train for days (the early dstack workflows set no limit).
Limits are `ServerSettings.*_timeout`; each counts from the job's `status_at`, and only over
time this server was listening (`since`), so a server that was down or stalled never
blames a runner that could not reach it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow, RunnerRow
from dstack.server.services import jobs as job_service
from dstack.server.settings import ServerSettings

CLAIM_REQUEUES = 1
"""How often a job whose claim was never confirmed goes back to the queue before it fails."""


def limits(settings: ServerSettings) -> dict[JobStatus, float]:
    """Each bounded state and its limit in seconds."""
    return {
        JobStatus.PROVISIONING: settings.provisioning_timeout,
        JobStatus.DOWNLOADING: settings.downloading_timeout,
        JobStatus.UPLOADING: settings.uploading_timeout,
    }


async def any_overdue(ctx: ServerContext, session: AsyncSession, *, since: datetime) -> bool:
    """Whether `expire_overdue` would find a job now (one indexed query)."""
    overdue = _overdue(ctx, since)
    if overdue is None:
        return False
    return await session.scalar(select(JobRow.id).where(overdue).limit(1)) is not None


async def expire_overdue(ctx: ServerContext, session: AsyncSession, *, since: datetime) -> None:
    """End (or re-queue) every job past the deadline of its state."""
    overdue = _overdue(ctx, since)
    if overdue is None:
        return
    jobs = (await session.scalars(select(JobRow).where(overdue).order_by(JobRow.status_at))).all()
    bounds = limits(ctx.settings)
    for job in jobs:
        status = JobStatus(job.status)
        runner = await _runner_name(session, job.runner_id)
        if status is JobStatus.PROVISIONING:
            await _unconfirmed(ctx, session, job, bounds[status], runner)
        else:
            await _stuck(ctx, session, job, bounds[status], runner)


def _overdue(ctx: ServerContext, since: datetime) -> ColumnElement[bool] | None:
    """Jobs in a bounded state since before its cutoff; None when the server has not been
    listening as long as any limit."""
    now = ctx.clock()
    clauses = []
    for status, limit in limits(ctx.settings).items():
        cutoff = now - timedelta(seconds=limit)
        if cutoff >= since:
            clauses.append(and_(JobRow.status == status.value, JobRow.status_at < cutoff))
    return or_(*clauses) if clauses else None


async def _unconfirmed(
    ctx: ServerContext, session: AsyncSession, job: JobRow, limit: float, runner: str
) -> None:
    """A claim never confirmed: back to the queue once, then `runner_lost`; a job the user
    stopped meanwhile ends as they asked."""
    note = f"provisioning for more than {_seconds(limit)}: runner '{runner}' never confirmed"
    if job.stop_requested:
        status, reason = _STOPPED[job.stop_requested]
        await _final(ctx, session, job, reason, f"{note} the claim", status=status)
    elif JobSpec.model_validate(job.spec).resources.nodes > 1:  # a node cannot rejoin
        await _final(ctx, session, job, TerminationReason.RUNNER_LOST, f"{note} the claim")
    elif job_service.claim_requeues(job_service.history(job)) < CLAIM_REQUEUES:
        message = f"{note} the claim; re-queued"
        now = ctx.clock()
        reason = TerminationReason.DEADLINE_EXCEEDED
        await job_service.requeue(session, job, now=now, reason=reason, message=message)
    else:
        message = f"{note} the claim, after a re-queue for the same"
        await _final(ctx, session, job, TerminationReason.RUNNER_LOST, message)


_STOPPED = {
    "stop": (JobStatus.STOPPED, TerminationReason.STOPPED_BY_USER),
    "abort": (JobStatus.ABORTED, TerminationReason.ABORTED_BY_USER),
}


async def _stuck(
    ctx: ServerContext, session: AsyncSession, job: JobRow, limit: float, runner: str
) -> None:
    state = job.status
    message = (
        f"{state} for more than {_seconds(limit)} on runner '{runner}' "
        f"(the server's --{state}-timeout)"
    )
    await _final(ctx, session, job, TerminationReason.DEADLINE_EXCEEDED, message)


async def _final(
    ctx: ServerContext,
    session: AsyncSession,
    job: JobRow,
    reason: TerminationReason,
    message: str,
    *,
    status: JobStatus = JobStatus.FAILED,
) -> None:
    await job_service.set_status(
        session, job, status, now=ctx.clock(), reason=reason, message=message
    )


async def _runner_name(session: AsyncSession, runner_id: str | None) -> str:
    name = None
    if runner_id is not None:
        name = await session.scalar(select(RunnerRow.name).where(RunnerRow.id == runner_id))
    return name or f"{runner_id}"


def _seconds(limit: float) -> str:
    return f"{limit:g} s"
