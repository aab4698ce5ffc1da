"""Claims: a runner long-polls for the oldest runnable job that fits what it has free."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.artifacts import DepArtifacts, Manifest, StorageAccess
from dstack.models.job import JobSpec, JobStatus
from dstack.models.protocol import JobAssignment, JobStatusUpdate
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.models.runner import RunnerStatus
from dstack.server.context import Notifier, ServerContext
from dstack.server.db.base import get_row
from dstack.server.db.models import UNFINISHED_JOB, JobRow, RunnerRow, RunRow, job_status_in
from dstack.server.services import gangs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services import secrets as secret_service
from dstack.server.services.artifacts import job_artifacts, manifests_of
from dstack.server.services.matching import (
    Allocation,
    FreeResources,
    allocate,
    cpu_slots,
    free_resources,
    labels_match,
)
from dstack.server.services.workflow_caches import caches_for
from dstack.storage.base import BlobStore, SupportsDirectAccess

WAITING_STATUSES = [JobStatus.SUBMITTED.value, JobStatus.PENDING.value]
# Waiting jobs read per query while looking for one to claim: a claim usually takes the
# first that fits, and each row read carries its spec and history to decode. The first
# read takes one; a claim that passes over it reads on by pages.
_BATCH = 8
_FRESH = timedelta(seconds=1)

# A claim's statements are built once (building one and its cache key costs more than
# running it on SQLite); values go in as bound parameters.
_JOBS = JobRow.__table__
_ANY_WAITING = select(_JOBS.c.id).where(UNFINISHED_JOB, job_status_in(WAITING_STATUSES)).limit(1)
# Active jobs, and nodes of gangs reserved for the runner (`gangs`: still waiting, with the
# runner set), hold its resources; one read says both, the oldest first.
_HELD = (
    select(_JOBS.c.id, _JOBS.c.status, _JOBS.c.spec, _JOBS.c.gpu_indexes)
    .where(_JOBS.c.runner_id == bindparam("runner_id"), job_status_in(gangs.HELD_STATUSES))
    .order_by(_JOBS.c.submitted_at, _JOBS.c.run_name, _JOBS.c.index)
)
_QUEUE_ORDER = (JobRow.submitted_at, JobRow.run_name, JobRow.index)
_WAITING = (
    select(JobRow)
    .where(UNFINISHED_JOB, job_status_in(WAITING_STATUSES), JobRow.runner_id.is_(None))
    .order_by(*_QUEUE_ORDER)
    .limit(1)
)
# The keys of a tuple comparison take no type from their columns: they are given them.
_WAITING_AFTER = _WAITING.where(
    tuple_(*_QUEUE_ORDER)
    > tuple_(
        *(
            bindparam(key, type_=c.type)
            for key, c in zip(("at", "run", "index"), _QUEUE_ORDER, strict=True)
        )
    )
).limit(_BATCH)
# On PostgreSQL, of the jobs of a page that fit the runner, the oldest still waiting that no
# other claimer holds, locked until commit (`FOR UPDATE SKIP LOCKED`): one statement, where
# locking them one by one made every concurrent claimer race for the same oldest jobs, a
# statement per try. Only jobs that fit are locked: a runner that cannot take a job never
# keeps it from one that can.
_LOCK_OLDEST = (
    select(JobRow)
    .where(
        JobRow.id.in_(bindparam("ids", expanding=True)),
        job_status_in(WAITING_STATUSES),
        JobRow.runner_id.is_(None),
    )
    .order_by(*_QUEUE_ORDER)
    .limit(1)
    .with_for_update(skip_locked=True)
    .execution_options(populate_existing=True)
)
_RUN_REPO = select(RunRow.__table__.c.repo, RunRow.__table__.c.repo_id).where(
    RunRow.__table__.c.name == bindparam("name")
)


async def claim(
    ctx: ServerContext,
    *,
    runner_id: str,
    wait_seconds: float,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> JobAssignment | None:
    """Assign a job to the runner, waiting up to `wait_seconds` for one; None if none came.

    Wakes as soon as there may be new work (a submit, a finished job: a freed slot or a met
    dependency; see `ServerContext.work`), and at least every `scheduler_interval` while a
    job waits (one that cannot be taken now may be later); with no job waiting, only a
    change can bring one, and the claim sleeps until it comes or its wait ends. `gone`
    says whether the runner stopped waiting (its connection closed): a runner that died
    while its claim waited must not be handed a job, which nobody would then run. While
    it waits, and until `runner_heartbeat_timeout` after it ended, the runner is alive
    (`ServerContext.claims`), heartbeats or not.
    """
    ctx.claims.enter(runner_id, ctx.clock() + timedelta(seconds=wait_seconds))
    try:
        return await _claim(ctx, runner_id, wait_seconds, gone)
    finally:
        ctx.claims.leave(runner_id, ctx.clock())


async def report_status(
    ctx: ServerContext, *, job_id: str, update: JobStatusUpdate, runner_id: str
) -> JobAssignment | None:
    """Apply the runner's report (`jobs.report_status`); for a final status that asks for it
    (`next_job`), the runner's next job, claimed as its claim would take it without waiting
    (None when none fits): its slot is free, and the runner saves a round trip.

    The report and that claim are one transaction (one commit, one wake of the waiters): a
    report refused is refused whole, and a job is handed out only with its report applied.
    """
    if not (update.next_job and update.status.is_finished()) or ctx.draining:
        await job_service.report_status(ctx, job_id=job_id, update=update, runner_id=runner_id)
        return None
    ctx.claims.enter(runner_id, ctx.clock())
    try:
        return await _report_and_claim(ctx, job_id=job_id, update=update, runner_id=runner_id)
    except _GangRace:  # rolled back, the report with the gang: the report goes alone
        await job_service.report_status(ctx, job_id=job_id, update=update, runner_id=runner_id)
        return None
    finally:
        ctx.claims.leave(runner_id, ctx.clock())


async def _report_and_claim(
    ctx: ServerContext, *, job_id: str, update: JobStatusUpdate, runner_id: str
) -> JobAssignment | None:
    sqlite = ctx.engine.dialect.name == "sqlite"
    async with _claim_turn(ctx), ctx.transaction() as session:
        if not sqlite:  # before the job's row, in the order claims and the scheduler lock
            await _lock_runner(session, runner_id)
        await job_service.apply_report(
            ctx, session, job_id=job_id, update=update, runner_id=runner_id
        )
        runner = await get_row(session, RunnerRow, runner_id)
        if runner is None:  # removed meanwhile: its report stands, it gets nothing
            return None
        return await _claim_for(ctx, session, runner, sqlite=sqlite)


async def _claim(
    ctx: ServerContext,
    runner_id: str,
    wait_seconds: float,
    gone: Callable[[], Awaitable[bool]] | None,
) -> JobAssignment | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    woken = False
    while True:
        event = ctx.work.current()
        if ctx.draining:
            return None
        assignment = None
        waiting = True  # as far as this claim knows: the first round just tries
        # Every waiting runner wakes at once: when the queue is empty (the usual case for
        # an idle fleet), one read says so instead of a claim transaction each.
        if woken and gone is not None and await gone():
            # The scheduler counted on this claim until its deadline: it looks again now,
            # to mark the runner offline once it has been silent for the timeout.
            ctx.work.notify()
            return None
        if woken:
            waiting = await _any_waiting(ctx)
        if waiting:
            assignment = await try_claim(ctx, runner_id=runner_id)
            if assignment is None and not woken:
                waiting = await _any_waiting(ctx)
        remaining = deadline - loop.time()
        if assignment is not None or remaining <= 0:
            return assignment
        pause = min(remaining, ctx.settings.scheduler_interval) if waiting else remaining
        await Notifier.wait(event, pause)
        woken = True


async def _any_waiting(ctx: ServerContext) -> bool:
    async with ctx.connect() as connection:
        return await connection.scalar(_ANY_WAITING) is not None


async def try_claim(ctx: ServerContext, *, runner_id: str) -> JobAssignment | None:
    """One attempt, no waiting.

    The status change is guarded by the job's version, so two servers (or two runners) racing
    for the same job cannot both get it. On PostgreSQL the runner's row is locked for the
    claim (its free resources are computed once at a time) and the job is picked with
    `FOR UPDATE SKIP LOCKED`, so concurrent claimers in any number of server processes pass
    over each other's job instead of losing races; SQLite has one writer at a time anyway.

    A node of a gang reserved for this runner comes first; a gang's primary is taken only
    with its whole gang (`gangs`): the other nodes are reserved in the same transaction.
    """
    try:
        return await _try_claim(ctx, runner_id)
    except _GangRace:  # rolled back: the gang's nodes are free again
        return None


async def _try_claim(ctx: ServerContext, runner_id: str) -> JobAssignment | None:
    sqlite = ctx.engine.dialect.name == "sqlite"
    async with _claim_turn(ctx), ctx.transaction() as session:
        if not sqlite:
            await _lock_runner(session, runner_id)
        runner = await runner_service.require_runner(session, runner_id)
        return await _claim_for(ctx, session, runner, sqlite=sqlite)


async def _claim_for(
    ctx: ServerContext, session: AsyncSession, runner: RunnerRow, *, sqlite: bool
) -> JobAssignment | None:
    """The claim, in the caller's transaction (the runner's row locked on PostgreSQL)."""
    if runner.status == RunnerStatus.INTERRUPTED.value:  # its machine is going away
        return None
    _touch(ctx, runner)
    host = HostResources.model_validate(runner.resources)
    if host.low_disk:  # the job would fill its disk: it waits (`matching.waiting_message`)
        return None
    held, reserved = await _held(session, runner.id)
    if reserved is not None:  # a node of a gang, given to this runner ahead
        job = await get_row(session, JobRow, reserved)
        return None if job is None else await _take_reserved(ctx, session, job, runner)
    free = free_resources(host, held)
    if free.cpus < 1:  # every job takes a CPU slot (`cpu_slots`): none fits, say so at once
        return None
    async for batch in _runnable(session):
        fitting = [c for c in (_fit(job, runner, free) for job in batch) if c is not None]
        while fitting:
            job, spec, allocation = fitting.pop(0)
            # SQLite claims take turns, and the versioned update below catches any other
            # writer; elsewhere a row lock keeps concurrent claimers off the job.
            if not sqlite:
                ids = [job.id] + [c[0].id for c in fitting]
                locked = await session.scalar(_LOCK_OLDEST, {"ids": ids})
                if locked is None:  # others hold or took every one of them
                    break
                while job.id != locked.id:  # those before it: held or taken by others
                    job, spec, allocation = fitting.pop(0)
            gang = gangs.is_gang(spec)
            if gang and not await _assign_gang(ctx, session, job, spec, runner, sqlite=sqlite):
                continue
            message = f"assigned to runner '{runner.name}'"
            gpus = list(allocation.gpu_indexes)
            assignment = await _hand_over(ctx, session, job, spec, runner, message, gpus)
            if assignment is not None:
                return assignment
            if gang:  # the other nodes are reserved: undo them with it
                raise _GangRace()
    return None


def _fit(
    job: JobRow, runner: RunnerRow, free: FreeResources
) -> tuple[JobRow, JobSpec, Allocation] | None:
    """`job`, its spec and what it would take of `free`, when runner `runner` can run it."""
    spec = JobSpec.model_validate(job.spec)
    if spec.node_rank:  # a node of a gang: assigned with its primary
        return None
    if not labels_match(spec.labels, runner.labels):
        return None
    allocation = allocate(spec.resources, free)
    return None if allocation is None else (job, spec, allocation)


class _GangRace(Exception):
    """The primary changed while its gang was being reserved: nothing is kept."""


async def _assign_gang(
    ctx: ServerContext,
    session: AsyncSession,
    primary: JobRow,
    spec: JobSpec,
    runner: RunnerRow,
    *,
    sqlite: bool,
) -> bool:
    """Reserve nodes 1..N-1 of `primary`'s gang on N-1 other free runners, or nothing."""
    others = [j for j in await gangs.gang_rows(session, primary, spec) if j.id != primary.id]
    if len(others) != spec.resources.nodes - 1:
        return False
    if any(j.status not in WAITING_STATUSES or j.runner_id is not None for j in others):
        return False
    places = await gangs.place_others(
        ctx, session, spec, claimer_id=runner.id, count=len(others), lock=not sqlite
    )
    if places is None:
        return False
    if not sqlite:
        for job in others:
            if not await _lock_waiting(session, job):
                return False
    for job, place in zip(others, places, strict=True):
        if not await gangs.reserve(ctx, session, job, place, runner.name):
            raise _GangRace()
    return True


async def _take_reserved(
    ctx: ServerContext, session: AsyncSession, job: JobRow, runner: RunnerRow
) -> JobAssignment | None:
    spec = JobSpec.model_validate(job.spec)
    message = f"node {spec.node_rank} assigned to runner '{runner.name}'"
    return await _hand_over(ctx, session, job, spec, runner, message)


async def _hand_over(
    ctx: ServerContext,
    session: AsyncSession,
    job: JobRow,
    spec: JobSpec,
    runner: RunnerRow,
    message: str,
    gpu_indexes: list[int] | None = None,
) -> JobAssignment | None:
    """Move `job` to `provisioning` on `runner` and make its assignment; None when another
    writer changed the job first (`set_status`)."""
    fields: dict[str, Any] = {} if gpu_indexes is None else {"gpu_indexes": gpu_indexes}
    claimed = await job_service.set_status(
        session,
        job,
        JobStatus.PROVISIONING,
        now=ctx.clock(),
        message=message,
        runner=runner.name,
        runner_id=runner.id,
        **fields,
    )
    return await _assignment(ctx, session, job, spec) if claimed else None


@contextlib.asynccontextmanager
async def _claim_turn(ctx: ServerContext) -> AsyncIterator[None]:
    # Within one process, SQLite claims take turns (they would only lose races to each
    # other); PostgreSQL relies on row locks, which also hold across server processes.
    if ctx.engine.dialect.name != "sqlite":
        yield
        return
    async with ctx.claim_lock:
        yield


async def _lock_runner(session: AsyncSession, runner_id: str) -> None:
    """Hold the runner's row until commit (PostgreSQL; SQLite has no row locks)."""
    await session.execute(select(RunnerRow.id).where(RunnerRow.id == runner_id).with_for_update())


async def _lock_waiting(session: AsyncSession, job: JobRow) -> bool:
    """Lock `job` if it is still waiting and nobody else holds it; refreshes the row.

    False when another claimer has it locked or took it meanwhile: try the next job.
    """
    locked = await session.scalar(
        select(JobRow)
        .where(JobRow.id == job.id, JobRow.status.in_(WAITING_STATUSES))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return locked is not None


def _touch(ctx: ServerContext, runner: RunnerRow) -> None:
    # A runner asking for work is alive, whatever its last heartbeat said. A busy runner
    # claims many times a second: a heartbeat a second old is as good, and saves a write.
    now = ctx.clock()
    last = runner.last_heartbeat
    if runner.status != RunnerStatus.READY.value or last is None or now - last > _FRESH:
        runner.last_heartbeat = now
        runner.status = RunnerStatus.READY.value


async def _held(session: AsyncSession, runner_id: str) -> tuple[list[Allocation], str | None]:
    """What the runner's jobs hold (only the columns that say so are read), and the id of
    the oldest node of a gang reserved for it (None: none is)."""
    rows = (await session.execute(_HELD, {"runner_id": runner_id})).all()
    reserved = next((row.id for row in rows if row.status in WAITING_STATUSES), None)
    return [_allocation(row.spec, row.gpu_indexes) for row in rows], reserved


def _allocation(spec: dict[str, Any], gpu_indexes: list[int]) -> Allocation:
    resources = JobSpec.model_validate(spec).resources
    return Allocation(cpu_slots(resources), resources.memory_mib or 0, tuple(gpu_indexes))


async def _runnable(session: AsyncSession) -> AsyncIterator[list[JobRow]]:
    """Waiting jobs whose dependencies are all done, oldest first, a page at a time.

    Read in small pages (keyset pages): a claim usually takes one of the first jobs, so a
    long queue is not loaded and decoded on every claim.
    """
    after: dict[str, Any] | None = None
    while True:
        if after is None:
            batch = (await session.scalars(_WAITING)).all()
        else:
            batch = (await session.scalars(_WAITING_AFTER, after)).all()
        if not batch:
            return
        statuses = await dependency_statuses(session, batch)
        yield [
            job
            for job in batch
            if all(statuses.get((job.run_name, d)) == JobStatus.DONE.value for d in job.deps)
        ]
        if len(batch) < (1 if after is None else _BATCH):
            return
        last = batch[-1]
        after = {"at": last.submitted_at, "run": last.run_name, "index": last.index}


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


async def _assignment(
    ctx: ServerContext, session: AsyncSession, job: JobRow, spec: JobSpec
) -> JobAssignment:
    run = (await session.execute(_RUN_REPO, {"name": job.run_name})).one()
    return JobAssignment(
        job_id=job.id,
        run_name=job.run_name,
        job_index=job.index,
        spec=spec,
        repo=RepoRef.model_validate(run.repo),
        gpu_indexes=list(job.gpu_indexes),
        deps=await dependency_artifacts(session, job),
        resume=await resumed_artifacts(session, job, spec),
        caches=await caches_for(session, run.repo_id, job.workflow_name, spec.cache),
        storage=storage_access(ctx.blobs),
        secrets=await secret_service.job_secrets(session, ctx.settings, repo_id=run.repo_id),
        node=await gangs.node_info(session, job, spec),
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
            DepArtifacts.model_validate(a.model_dump())
            for a in await job_artifacts(session, sorted(rows, key=_placing_order))
        ]
    outer = [DepArtifacts.model_validate(a) for a in job.external_artifacts or []]
    return inner + outer


def _placing_order(row: JobRow) -> tuple[int, int]:
    """By job; the nodes of a multi-node dependency from the last to node 0, whose files
    are placed last: where two nodes wrote the same file, node 0's is kept."""
    rank = int(row.spec.get("node_rank", 0) or 0)
    return (row.index - rank, -rank)


async def resumed_artifacts(session: AsyncSession, job: JobRow, spec: JobSpec) -> list[Manifest]:
    """A re-queued job's own artifacts, as its earlier attempts last synced them (an
    interrupted attempt syncs them before it reports): the next attempt starts with them in
    its artifact folders, so a job that writes checkpoints resumes from the last one.
    Only paths the job still declares; none for a job never re-queued."""
    if not job_service.attempts(job_service.history(job)):
        return []
    declared = {a.path for a in spec.artifacts}
    manifests = (await manifests_of(session, [job.id])).get(job.id, [])
    return [m for m in manifests if m.path in declared]


def storage_access(store: BlobStore) -> StorageAccess:
    """How runners reach `store`: directly when it says how (a folder on this machine, a
    bucket through presigned URLs), else through the server's blob endpoints."""
    if isinstance(store, SupportsDirectAccess):
        return store.direct_access()
    return StorageAccess(kind="http")
