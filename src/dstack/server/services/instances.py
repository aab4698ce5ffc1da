"""Cloud instances as the server records them (`InstanceRow`): what provisioning decided,
asked and learnt. Only the database here; the cloud calls are made by the scheduler's
provisioner (`scheduler/provisioning.py`) between these transactions, never inside one.

An instance is recorded `creating` before `Compute.create` is asked (so a crash in between
leaves a row that names it, and its tags find it), `booting` once created, `ready` when its
runner registered (`services/runners.register`), `terminating` before `Compute.terminate`
is asked, `terminated` once it was. Rows are kept afterwards: costs and offers tried.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dstack.models.backends import InstanceOffer, InstanceStatus
from dstack.models.job import (
    Job,
    JobInstance,
    JobStatus,
    StatusChange,
    TerminationReason,
    held_seconds,
)
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import UNFINISHED_JOB, InstanceRow, JobRow
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services.users import hash_token, new_token

ALIVE = [s.value for s in InstanceStatus if s.is_alive()]
# Instances whose runner has not registered yet: their job waits for them.
BOOTING = [InstanceStatus.CREATING.value, InstanceStatus.BOOTING.value]
# Tags every instance gets: which server made it (found again after a crash), its name.
SERVER_TAG = "dstack-server"
NAME_TAG = "dstack-instance"
BACKEND_TAG = "dstack-backend"


def describe_offer(offer: InstanceOffer) -> str:
    """`g4dn.xlarge (spot, $0.16/h) on aws`"""
    price = format_price(offer.price)
    return f"{offer.instance_type} ({market(offer.spot)}, {price}/h) on {offer.backend}"


def market(spot: bool) -> str:
    return "spot" if spot else "on-demand"


def format_price(price: float) -> str:
    return f"${price:.2f}" if price >= 0.1 or price == 0 else f"${price:.3f}"


def tags(server_id: str, name: str, backend: str) -> dict[str, str]:
    return {SERVER_TAG: server_id, NAME_TAG: name, BACKEND_TAG: backend}


async def alive(session: AsyncSession) -> Sequence[InstanceRow]:
    """Every instance not terminated, oldest first."""
    query = select(InstanceRow).where(InstanceRow.state.in_(ALIVE))
    return (await session.scalars(query.order_by(InstanceRow.created_at))).all()


async def count_alive(session: AsyncSession, backend: str) -> int:
    """What `BackendLimits.max_instances` counts: the backend's instances not terminated."""
    query = select(func.count()).where(InstanceRow.backend == backend, InstanceRow.state.in_(ALIVE))
    return int(await session.scalar(query) or 0)


async def of_job(session: AsyncSession, job_id: str) -> Sequence[InstanceRow]:
    """The instances made for `job_id`, oldest first (the offers it tried)."""
    query = select(InstanceRow).where(InstanceRow.job_id == job_id)
    return (await session.scalars(query.order_by(InstanceRow.created_at, InstanceRow.price))).all()


async def waiting_jobs(session: AsyncSession) -> Sequence[JobRow]:
    """Jobs that wait for an instance (or for capacity), in submission order."""
    query = select(JobRow).where(
        UNFINISHED_JOB,
        JobRow.status == JobStatus.PENDING.value,
        JobRow.reason.in_(
            [TerminationReason.WAITING_FOR_INSTANCE.value, TerminationReason.NO_CAPACITY.value]
        ),
    )
    return (await session.scalars(query.order_by(JobRow.run_name, JobRow.index))).all()


async def record_creating(
    ctx: ServerContext, session: AsyncSession, *, job: JobRow, offer: InstanceOffer
) -> tuple[InstanceRow, str]:
    """Record an instance of `offer` for `job` as `creating`, and the job as waiting for
    it; returns the row and the registration credential for its user data (only its
    sha256 is kept)."""
    token = new_token()
    row = InstanceRow(
        id=uuid.uuid4().hex,
        name=f"dstack-{uuid.uuid4().hex[:12]}",
        backend=offer.backend,
        offer=offer.model_dump(mode="json"),
        instance_type=offer.instance_type,
        region=offer.region,
        spot=offer.spot,
        price=offer.price,
        state=InstanceStatus.CREATING.value,
        job_id=job.id,
        token_hash=hash_token(token),
        created_at=ctx.clock(),
    )
    session.add(row)
    await job_service.set_status(
        session,
        job,
        JobStatus.PENDING,
        now=ctx.clock(),
        reason=TerminationReason.WAITING_FOR_INSTANCE,
        message=f"provisioning {describe_offer(offer)}",
    )
    return row, token


async def record_created(ctx: ServerContext, *, instance_id: str, cloud_id: str) -> None:
    """The cloud created it: `booting`, unless its runner registered already."""
    async with ctx.transaction() as session:
        row = await session.get(InstanceRow, instance_id)
        if row is None:
            return
        row.cloud_id = cloud_id
        if row.state == InstanceStatus.CREATING.value:
            row.state = InstanceStatus.BOOTING.value


async def start_terminating(
    ctx: ServerContext, session: AsyncSession, row: InstanceRow, reason: str
) -> bool:
    """Record that `row` is to be terminated, and forget its runner: the jobs it held are
    lost (re-queued when they may retry, `runner_lost` otherwise), it is never offered a
    job again. False when it was terminated already."""
    if row.state == InstanceStatus.TERMINATED.value:
        return False
    if row.state != InstanceStatus.TERMINATING.value:
        row.state, row.reason = InstanceStatus.TERMINATING.value, reason
    if row.runner_id is not None:
        await runner_service.forget_runner(
            ctx, session, row.runner_id, f"instance {row.name}: {reason}"
        )
    mark_changed(session, work=True)
    return True


def record_terminated(ctx: ServerContext, row: InstanceRow, reason: str | None = None) -> None:
    row.state = InstanceStatus.TERMINATED.value
    row.terminated_at = ctx.clock()
    if reason is not None:
        row.reason = reason


async def idle_since(session: AsyncSession, row: InstanceRow, now: datetime) -> datetime:
    """Since when the instance's runner, holding no job now, has held none: its last job's
    end, its registration, or `now` when it was busy at the last look (`idle_since` None)."""
    last_end = await session.scalar(
        select(func.max(JobRow.finished_at)).where(JobRow.runner_id == row.runner_id)
    )
    moments = [row.registered_at, last_end, now if row.idle_since is None else None]
    return max(m for m in moments if m is not None)


def round_start(job: JobRow) -> datetime | None:
    """When the job last said it waits for capacity (`pending` with `no_capacity`), or was
    last re-queued (an interruption, a lost runner): the offers it tried since are this
    round's. A re-queued job tries every offer again, the cheapest first: the instance its
    last attempt ran on was no failed offer."""
    changes = no_capacity_waits(job)
    requeued = _last_requeue(job_service.history(job))
    return max((m for m in (changes[-1] if changes else None, requeued) if m), default=None)


def no_capacity_waits(job: JobRow) -> list[datetime]:
    """When the job said it waits for capacity, since its last re-queue (each attempt has
    its own backoff and `no_capacity_timeout`)."""
    changes = job_service.history(job)
    since = _last_requeue(changes)
    return [
        c.at
        for c in changes
        if c.status is JobStatus.PENDING
        and c.reason is TerminationReason.NO_CAPACITY
        and (since is None or c.at >= since)
    ]


def _last_requeue(changes: Sequence[StatusChange]) -> datetime | None:
    """When the job was last put back in the queue (`submitted` with a reason)."""
    requeues = [c.at for c in changes if c.status is JobStatus.SUBMITTED and c.reason]
    return requeues[-1] if requeues else None


# --- what `dstack ps` shows ---------------------------------------------------------------
_INSTANCES = InstanceRow.__table__
# Built once (see `services/runs.py`); the runners' ids once each, not once per job.
_OF_JOBS = select(_INSTANCES).where(
    or_(
        _INSTANCES.c.runner_id.in_(bindparam("runner_ids", expanding=True)),
        and_(
            _INSTANCES.c.job_id.in_(bindparam("waiting", expanding=True)),
            _INSTANCES.c.state.in_(BOOTING),
        ),
    )
)


async def of_jobs(connection: AsyncConnection, jobs: Sequence[Row[Any]]) -> dict[str, Row[Any]]:
    """Job id → the instance whose runner it holds (or held last), else the instance being
    created for it; of rows of the jobs table."""
    runner_ids = sorted({j.runner_id for j in jobs if j.runner_id})
    waiting = [j.id for j in jobs if j.runner_id is None and not JobStatus(j.status).is_finished()]
    if not runner_ids and not waiting:
        return {}
    params = {"runner_ids": runner_ids, "waiting": waiting}
    rows = (await connection.execute(_OF_JOBS, params)).all()
    by_runner = {r.runner_id: r for r in rows if r.runner_id}
    by_job = {r.job_id: r for r in rows if r.state in BOOTING}
    found: dict[str, Row[Any]] = {}
    for job in jobs:
        row = by_runner.get(job.runner_id) if job.runner_id else by_job.get(job.id)
        if row is not None:
            found[job.id] = row
    return found


def with_instance(job: Job, row: Row[Any] | None) -> Job:
    """`job` with its instance and cost: the instance's price times the time the job held a
    runner (its active phases)."""
    if row is None:
        return job
    instance = job_instance(row)
    cost = held_cost(row, held_seconds(job.timings)) if job.runner_id is not None else None
    return job.model_copy(update={"instance": instance, "cost": cost})


def job_instance(row: Row[Any]) -> JobInstance:
    """The instance of a row of the instances table, as a job shows it."""
    return JobInstance(
        name=row.name,
        backend=row.backend,
        instance_type=row.instance_type,
        spot=row.spot,
        price=row.price,
        state=row.state,
    )


def held_cost(row: Row[Any], held: float) -> float:
    """USD: the instance's price for `held` seconds."""
    return round(float(row.price) * held / 3600, 6)
