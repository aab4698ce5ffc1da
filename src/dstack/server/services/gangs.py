"""Gangs: the N jobs of a multi-node job (`resources.nodes` N > 1) start together or not
at all, on N distinct runners that each fit them.

Policy (README "Multi-node runs"):

- A gang is assigned whole, in one transaction, by the claim of a free runner that fits its
  primary (node 0): that runner takes node 0 at once, and N-1 other runners that are free
  right now (ready, fitting, with the labels, not short of disk) are each given one node
  ahead of their claim (the job stays `pending` with `runner_id` set: *reserved*; the
  runner's next claim takes it first). When fewer than N runners are free, nothing is
  held: the claimer passes the gang by and takes the next job that fits (single jobs are
  never kept waiting by a gang; a gang may wait while smaller jobs keep runners busy).
- Claims take turns (SQLite: the claim lock; PostgreSQL: the runners' rows are locked with
  `SKIP LOCKED`), so two gangs competing for the same runners never each hold a part.
- A reserved node whose runner does not claim it within the server's
  `provisioning_timeout` fails (`runner_lost`), which stops its gang (`jobs.stop_gang`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.job import JobSpec, JobStatus, TerminationReason, gang_indexes
from dstack.models.protocol import NodeInfo
from dstack.models.resources import HostResources, ResourcesSpec
from dstack.models.runner import RunnerStatus
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import UNFINISHED_JOB, JobRow, RunnerRow
from dstack.server.services import jobs as job_service
from dstack.server.services.matching import (
    Allocation,
    allocate,
    cpu_slots,
    fits_ever,
    free_resources,
    labels_match,
)

WAITING_STATUSES = [JobStatus.SUBMITTED.value, JobStatus.PENDING.value]
HELD_STATUSES = [s.value for s in JobStatus if s.is_active()] + WAITING_STATUSES
DEFAULT_MASTER_PORT = 29500
MASTER_PORTS = 1000


def is_gang(spec: JobSpec) -> bool:
    return spec.resources.nodes > 1


@dataclass(frozen=True)
class Placement:
    runner: RunnerRow
    allocation: Allocation


async def gang_rows(session: AsyncSession, job: JobRow, spec: JobSpec) -> list[JobRow]:
    """The jobs of `job`'s gang, by rank."""
    indexes = list(gang_indexes(job.index, spec))
    query = (
        select(JobRow)
        .where(JobRow.run_name == job.run_name, JobRow.index.in_(indexes))
        .order_by(JobRow.index)
    )
    return list((await session.scalars(query)).all())


async def place_others(
    ctx: ServerContext,
    session: AsyncSession,
    spec: JobSpec,
    *,
    claimer_id: str,
    count: int,
    lock: bool,
) -> list[Placement] | None:
    """`count` runners other than the claimer, each free to take one node of `spec` now;
    None when there are not that many. With `lock` (PostgreSQL) their rows are locked,
    passing over runners another claim holds."""
    query = (
        select(RunnerRow)
        .where(RunnerRow.id != claimer_id, RunnerRow.status == RunnerStatus.READY.value)
        .order_by(RunnerRow.name)
    )
    if lock:
        query = query.with_for_update(skip_locked=True)
    fresh_after = ctx.clock() - timedelta(seconds=ctx.settings.runner_heartbeat_timeout)
    placements: list[Placement] = []
    for runner in (await session.scalars(query)).all():
        if runner.last_heartbeat is None or _utc(runner.last_heartbeat) < _utc(fresh_after):
            continue
        if not labels_match(spec.labels, runner.labels):
            continue
        host = HostResources.model_validate(runner.resources)
        if host.low_disk:
            continue
        allocation = allocate(spec.resources, free_resources(host, await held_by(session, runner)))
        if allocation is None:
            continue
        placements.append(Placement(runner, allocation))
        if len(placements) == count:
            return placements
    return None


def _utc(moment: datetime) -> datetime:
    # SQLite gives naive datetimes (UTC) back.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def held_by(session: AsyncSession, runner: RunnerRow) -> list[Allocation]:
    """What `runner`'s active and reserved jobs hold."""
    rows = await session.execute(
        select(JobRow.spec, JobRow.gpu_indexes).where(
            JobRow.runner_id == runner.id, JobRow.status.in_(HELD_STATUSES)
        )
    )
    result = []
    for raw, gpu_indexes in rows:
        resources = JobSpec.model_validate(raw).resources
        result.append(
            Allocation(cpu_slots(resources), resources.memory_mib or 0, tuple(gpu_indexes))
        )
    return result


async def reserve(
    ctx: ServerContext, session: AsyncSession, job: JobRow, place: Placement, primary: str
) -> bool:
    """Give node `job` to `place.runner` ahead of its claim; False when it changed."""
    spec = JobSpec.model_validate(job.spec)
    name = place.runner.name
    message = (
        f"node {spec.node_rank} assigned to runner '{name}' with its gang (node 0 on "
        f"'{primary}'); waiting for the runner to take it"
    )
    reserved = await job_service.set_status(
        session,
        job,
        JobStatus.PENDING,
        now=ctx.clock(),
        reason=TerminationReason.WAITING_FOR_RUNNER,
        message=message,
        runner_id=place.runner.id,
        gpu_indexes=list(place.allocation.gpu_indexes),
    )
    mark_changed(session, work=True)  # wake the runner's claim
    return reserved


async def node_info(session: AsyncSession, job: JobRow, spec: JobSpec) -> NodeInfo:
    """Where job `job` stands in its gang, and how to reach the primary."""
    nodes = spec.resources.nodes
    if nodes <= 1:
        return NodeInfo(
            rank=0,
            nodes=1,
            master_address="127.0.0.1",
            master_port=master_port(spec, job.id),
            master_job_id=job.id,
        )
    first = gang_indexes(job.index, spec).start
    primary = await session.scalar(
        select(JobRow).where(JobRow.run_name == job.run_name, JobRow.index == first)
    )
    address = "127.0.0.1"
    if primary is not None and primary.runner_id is not None:
        runner = await session.get(RunnerRow, primary.runner_id)
        if runner is not None:
            address = runner.address or runner.host
    return NodeInfo(
        rank=spec.node_rank,
        nodes=nodes,
        master_address=address,
        master_port=master_port(spec, primary.id if primary is not None else job.id),
        master_job_id=primary.id if primary is not None else "",
    )


def master_port(spec: JobSpec, primary_id: str) -> int:
    """The workflow's `MASTER_PORT` when its env sets one (a number), else a port of
    29500-30499 chosen by the primary job's id: two gangs whose primaries share a runner
    then rarely (1 in 1000) pick the same port, where one fixed port would always clash."""
    value = spec.env.get("MASTER_PORT", "")
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return DEFAULT_MASTER_PORT + zlib.crc32(primary_id.encode()) % MASTER_PORTS


def shortage(spec: ResourcesSpec, hosts: Sequence[tuple[str, HostResources]]) -> str | None:
    """`needs 3 runners that fit, 2 registered` when fewer runners than the gang's nodes
    could ever take a node; None when enough could."""
    fitting = sum(1 for _, host in hosts if fits_ever(spec, host))
    if fitting >= spec.nodes:
        return None
    return f"needs {spec.nodes} runners that fit, {fitting} registered"


async def any_reservation(session: AsyncSession) -> bool:
    query = select(JobRow.id).where(
        UNFINISHED_JOB, JobRow.status.in_(WAITING_STATUSES), JobRow.runner_id.is_not(None)
    )
    return await session.scalar(query.limit(1)) is not None


async def expire_reservations(ctx: ServerContext, session: AsyncSession) -> None:
    """A node reserved longer than `provisioning_timeout` without its runner's claim fails
    (`runner_lost`); its gang is stopped with it."""
    rows = (
        await session.scalars(
            select(JobRow).where(
                UNFINISHED_JOB, JobRow.status.in_(WAITING_STATUSES), JobRow.runner_id.is_not(None)
            )
        )
    ).all()
    limit = ctx.settings.provisioning_timeout
    now = ctx.clock()
    for job in rows:
        changes = job_service.history(job)
        since = changes[-1].at if changes else job.submitted_at
        if _utc(now) < _utc(since) + timedelta(seconds=limit):
            continue
        runner = await session.get(RunnerRow, job.runner_id)
        name = runner.name if runner is not None else job.runner_id
        spec = JobSpec.model_validate(job.spec)
        message = f"runner '{name}' did not take node {spec.node_rank} within {limit:g} s"
        await job_service.set_status(
            session,
            job,
            JobStatus.FAILED,
            now=now,
            reason=TerminationReason.RUNNER_LOST,
            message=message,
        )
