"""Runners: register, heartbeat, list, remove; which of their jobs to stop, abort or forget."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.backends.userdata import runner_labels
from dstack.errors import ConflictError, NotFoundError
from dstack.models.backends import InstanceOffer, InstanceStatus
from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.resources import HostResources
from dstack.models.runner import Runner, RunnerInstance, RunnerStatus
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.base import get_row
from dstack.server.db.dialects import dialect_insert
from dstack.server.db.models import UNFINISHED_JOB, InstanceRow, JobRow, RunnerRow, ServerMetaRow
from dstack.server.errors import Forbidden
from dstack.server.services import jobs as job_service
from dstack.server.services.users import hash_token, new_token

ACTIVE_STATUSES = [s.value for s in JobStatus if s.is_active()]
SERVER_ID_KEY = "server_id"


async def register(
    ctx: ServerContext,
    *,
    runner_id: str | None,
    request: RegisterRunnerRequest,
    instance: str | None = None,
) -> RegisterRunnerResponse:
    """Register a runner and mark it ready.

    `runner_id` None (the request carried a registration token): a new runner, with a fresh
    id and a fresh credential returned this once (only its sha256 is kept); a name another
    runner holds is refused (`ConflictError`): a name is not an identity. `runner_id` set
    (the runner's own credential): that runner restarted — same id, its host, resources,
    executors and labels updated; `runner_token` is None. The jobs it held stay its own: a
    restarted runner finishes them (syncs their folders, then reports them); those its
    heartbeats do not list once `runner_heartbeat_timeout` passed are lost (`heartbeat`).
    `instance` set (the request carried a cloud instance's registration credential): the
    runner of that instance, as `_create_for_instance` allows.
    """
    server = await server_id(ctx)
    token = None
    if instance is not None:
        runner_id, token = await _create_for_instance(ctx, request, instance)
    elif runner_id is None:
        runner_id, token = await _create(ctx, request)
    else:
        await _restart(ctx, runner_id, request)
    return RegisterRunnerResponse(runner_id=runner_id, runner_token=token, server_id=server)


async def _create(ctx: ServerContext, request: RegisterRunnerRequest) -> tuple[str, str]:
    """A new runner row; returns its id and credential."""
    token = new_token()
    row = RunnerRow(id=uuid.uuid4().hex, backend="local", token_hash=hash_token(token))
    try:
        async with ctx.transaction() as session:
            existing = await _by_name(session, request.name)
            if existing is not None and existing.token_hash is not None:
                raise _name_taken(request.name)
            if existing is not None:  # registered before runners had credentials: none to keep
                await _forget(ctx, session, existing, f"runner '{existing.name}' registered anew")
            row.registered_at = ctx.clock()
            _apply(ctx, row, request)
            session.add(row)
            mark_changed(session, work=True)
    except IntegrityError:  # the same name, registered at the same time
        raise _name_taken(request.name) from None
    return row.id, token


async def _create_for_instance(
    ctx: ServerContext, request: RegisterRunnerRequest, instance: str
) -> tuple[str, str]:
    """The runner of cloud instance `instance`, registering with the credential in its user
    data: `Forbidden` unless it is named as the instance and the instance has no runner
    yet and is not being terminated (the credential registers once). The runner's labels
    say which backend and instance it is (whatever it claims); the instance is `ready`."""
    token = new_token()
    row = RunnerRow(id=uuid.uuid4().hex, token_hash=hash_token(token))
    try:
        async with ctx.transaction() as session:
            found = await session.scalar(select(InstanceRow).where(InstanceRow.name == instance))
            if found is None or found.state not in _REGISTRABLE or found.runner_id is not None:
                raise Forbidden(f"instance {instance} has registered its runner already")
            if request.name != found.name:
                raise Forbidden(f"this credential registers the runner '{found.name}' only")
            now = ctx.clock()
            row.backend, row.registered_at = found.backend, now
            _apply(ctx, row, request)
            row.labels = {**request.labels, **_instance_labels(found)}
            row.resources = _instance_resources(found, request.resources)
            session.add(row)
            found.state, found.runner_id = InstanceStatus.READY.value, row.id
            found.registered_at = found.idle_since = now
            mark_changed(session, work=True)
    except IntegrityError:
        raise _name_taken(request.name) from None
    ctx.principals.clear()
    return row.id, token


# States an instance's runner may register in: its `create` call may not have returned yet.
_REGISTRABLE = frozenset({InstanceStatus.CREATING, InstanceStatus.BOOTING})


def _instance_labels(row: InstanceRow) -> dict[str, str]:
    return runner_labels(row.backend, row.name, row.instance_type, row.spot)


def _instance_resources(row: InstanceRow, reported: HostResources) -> dict[str, Any]:
    """A cloud runner's CPUs, memory and GPUs are its instance type's, as the offer its job
    was matched against says: the machine reports less (the kernel keeps some memory,
    `nvidia-smi` shows a GPU's memory short of its nominal size), and a job asking for the
    nominal amount would never be taken by the runner created for it. Free disk is the
    runner's own; GPUs too when the offer names none."""
    offer = InstanceOffer.model_validate(row.offer).resources
    machine: dict[str, Any] = {"cpus": offer.cpus, "memory_mib": offer.memory_mib}
    if offer.gpus:
        machine["gpus"] = offer.gpus
    return reported.model_copy(update=machine).model_dump(mode="json")


async def _restart(ctx: ServerContext, runner_id: str, request: RegisterRunnerRequest) -> None:
    try:
        async with ctx.transaction() as session:
            row = await require_runner(session, runner_id)
            if request.name != row.name and await _by_name(session, request.name) is not None:
                raise _name_taken(request.name)
            _apply(ctx, row, request)
            row.registered_at = ctx.clock()
            instance = await session.scalar(
                select(InstanceRow).where(InstanceRow.runner_id == runner_id)
            )
            if instance is not None:  # a cloud runner keeps what the server gave it
                row.labels = {**row.labels, **_instance_labels(instance)}
                row.resources = _instance_resources(instance, request.resources)
            mark_changed(session, work=True)
    except IntegrityError:
        raise _name_taken(request.name) from None


def _apply(ctx: ServerContext, row: RunnerRow, request: RegisterRunnerRequest) -> None:
    row.name = request.name
    row.host = request.host
    row.address = request.address
    row.resources = request.resources.model_dump(mode="json")
    row.executors = list(request.executors)
    row.labels = dict(request.labels)
    row.status = RunnerStatus.READY.value
    row.last_heartbeat = ctx.clock()


async def _by_name(session: AsyncSession, name: str) -> RunnerRow | None:
    return await session.scalar(select(RunnerRow).where(RunnerRow.name == name))


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"runner name '{name}' is taken by another runner",
        hint=f"start this runner with another --name, or free the name: dstack runners rm {name}",
    )


async def remove_runner(ctx: ServerContext, *, name: str) -> None:
    """`dstack runners rm NAME`: delete the runner and revoke its credential (at once in this
    process, within `auth_cache_seconds` in others sharing the database); its active jobs are
    lost (re-queued when their retries allow, failed with `runner_lost` otherwise) and its
    tunnel connection closed. `NotFoundError` when no runner has that name."""
    async with ctx.transaction() as session:
        row = await _by_name(session, name)
        if row is None:
            raise NotFoundError(f"runner '{name}' not found", hint="see `dstack runners`")
        await _forget(ctx, session, row, f"runner '{name}' was removed")
    ctx.principals.clear()
    await ctx.tunnels.disconnect(row.id)


async def forget_runner(
    ctx: ServerContext, session: AsyncSession, runner_id: str, message: str
) -> None:
    """Delete runner `runner_id` (a cloud runner whose instance goes): its active jobs are
    lost with `message`; its credential stops working. Nothing when it is gone already."""
    row = await session.get(RunnerRow, runner_id)
    if row is not None:
        await _forget(ctx, session, row, message)
        ctx.principals.clear()


async def _forget(ctx: ServerContext, session: AsyncSession, row: RunnerRow, message: str) -> None:
    """Fail (or re-queue) the runner's active jobs, then delete it."""
    await _fail_active_jobs(ctx, session, row, message)
    await session.execute(delete(RunnerRow).where(RunnerRow.id == row.id))
    mark_changed(session, work=True)


async def server_id(ctx: ServerContext) -> str:
    """This server's id: made on first use, kept in `server_meta` (so it survives restarts
    and is shared by every process on the database), cached in `ctx.server_id`."""
    if ctx.server_id is None:
        ctx.server_id = await _load_server_id(ctx)
    return ctx.server_id


async def _load_server_id(ctx: ServerContext) -> str:
    insert = dialect_insert(ctx.engine.dialect.name, ServerMetaRow)
    made = insert.values(key=SERVER_ID_KEY, value=uuid.uuid4().hex)
    async with ctx.transaction() as session:
        await session.execute(made.on_conflict_do_nothing(index_elements=["key"]))
        value = await session.scalar(
            select(ServerMetaRow.value).where(ServerMetaRow.key == SERVER_ID_KEY)
        )
    assert value is not None
    return value


async def require_runner(session: AsyncSession, runner_id: str) -> RunnerRow:
    row = await get_row(session, RunnerRow, runner_id)
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
    jobs it reports that are no longer its own (finished, deleted, given to another).

    A job the runner held before it last registered and no longer lists, once
    `runner_heartbeat_timeout` passed since that registration, is lost: the restarted runner
    did not find it (another work dir, a wiped disk) and never will.
    """
    async with ctx.transaction() as session:
        runner = await require_runner(session, runner_id)
        runner.last_heartbeat = ctx.clock()
        if runner.status == RunnerStatus.OFFLINE.value:
            runner.status = RunnerStatus.READY.value
            mark_changed(session, work=True)
        if request.disk_free_mib is not None:
            _record_disk(session, runner, request.disk_free_mib)
        jobs = await active_jobs(session, runner_id)
        unlisted = _not_recovered(ctx, runner, jobs, set(request.running_jobs))
        for job in unlisted:
            await _lose(ctx, session, job, _not_recovered_message(runner))
        jobs = [j for j in jobs if j not in unlisted]
    mine = {j.id for j in jobs}
    return HeartbeatResponse(
        stop_jobs=[j.id for j in jobs if j.stop_requested == "stop"],
        abort_jobs=[j.id for j in jobs if j.stop_requested == "abort"],
        forget_jobs=[job_id for job_id in request.running_jobs if job_id not in mine],
        idle_interval=idle_heartbeat_interval(ctx),
    )


IDLE_INTERVAL_MAX = 60.0


def idle_heartbeat_interval(ctx: ServerContext) -> float:
    """How rarely a runner with no job may heartbeat (and how long it may long-poll a
    claim): a third of the timeout; on a server alone on its database, where a waiting
    claim proves the runner alive (`ServerContext.claims`), four timeouts (at most a
    minute), so that an idle local runner and server wake each other about once a minute."""
    timeout = ctx.settings.runner_heartbeat_timeout
    if ctx.single_process:
        return min(4 * timeout, IDLE_INTERVAL_MAX)
    return timeout / 3


def _record_disk(session: AsyncSession, runner: RunnerRow, free_mib: int) -> None:
    """Keep the runner's free disk, when it moved enough to matter: the scheduler judges
    waiting jobs again whenever a runner's resources change, so a few MiB written by a job
    must not count as a change (a move of 1% or 64 MiB does). Crossing the runner's
    minimum always does (claims and the waiting jobs' reasons depend on it), and wakes the
    claims."""
    host = HostResources.model_validate(runner.resources)
    now = host.model_copy(update={"disk_mib": free_mib})
    moved = abs(free_mib - host.disk_mib)
    step = min(_DISK_STEP_MIB, max(1, host.disk_mib // 100))
    if now.low_disk == host.low_disk and moved < step:
        return
    runner.resources = {**runner.resources, "disk_mib": free_mib}
    if now.low_disk != host.low_disk:
        mark_changed(session, work=True)


_DISK_STEP_MIB = 64


def _not_recovered(
    ctx: ServerContext, runner: RunnerRow, jobs: Sequence[JobRow], listed: set[str]
) -> list[JobRow]:
    """The jobs `runner` held before its last registration, not listed, past the grace."""
    registered = _utc(runner.registered_at)
    grace = timedelta(seconds=ctx.settings.runner_heartbeat_timeout)
    if _utc(ctx.clock()) - registered < grace:
        return []
    return [j for j in jobs if j.id not in listed and _last_change(j) < registered]


def _not_recovered_message(runner: RunnerRow) -> str:
    return f"runner '{runner.name}' restarted and did not recover the job"


def _last_change(job: JobRow) -> datetime:
    changes = job_service.history(job)
    return _utc(changes[-1].at) if changes else datetime.min.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def list_runners(ctx: ServerContext) -> list[Runner]:
    async with ctx.transaction() as session:
        rows = (await session.scalars(select(RunnerRow).order_by(RunnerRow.name))).all()
        held = (
            await session.execute(
                select(JobRow.runner_id, JobRow.id).where(
                    UNFINISHED_JOB, JobRow.status.in_(ACTIVE_STATUSES)
                )
            )
        ).all()
        ids = [r.id for r in rows if r.backend != "local"]
        cloud = (
            (await session.scalars(select(InstanceRow).where(InstanceRow.runner_id.in_(ids)))).all()
            if ids
            else []
        )
    jobs: dict[str, list[str]] = {}
    for runner_id, job_id in held:
        jobs.setdefault(runner_id or "", []).append(job_id)
    instances = {i.runner_id: _instance_model(i) for i in cloud}
    return [_to_model(row, jobs.get(row.id, []), instances.get(row.id)) for row in rows]


def _instance_model(row: InstanceRow) -> RunnerInstance:
    return RunnerInstance(
        cloud_id=row.cloud_id,
        instance_type=row.instance_type,
        spot=row.spot,
        price=row.price,
        state=row.state,
    )


def _to_model(row: RunnerRow, running: list[str], instance: RunnerInstance | None) -> Runner:
    status = RunnerStatus(row.status)
    if status is RunnerStatus.READY and running:
        status = RunnerStatus.BUSY
    return Runner(
        id=row.id,
        name=row.name,
        host=row.host,
        address=row.address,
        resources=HostResources.model_validate(row.resources),
        executors=list(row.executors),
        labels=dict(row.labels),
        backend=row.backend,
        status=status,
        last_heartbeat=row.last_heartbeat,
        running_jobs=running,
        instance=instance,
    )


async def mark_lost_runners(
    ctx: ServerContext, session: AsyncSession, *, listening_since: datetime | None = None
) -> None:
    """Runners silent for longer than the heartbeat timeout go offline; their jobs are lost
    (re-queued when their `retry` allows, failed with `runner_lost` otherwise).

    Silence counts only while this server was listening: from `listening_since` (its start,
    or the end of its last stall: see `Scheduler`) at the earliest. While the server was
    down (a restart, an upgrade) or stalled (a suspended machine, a blocked process),
    runners could not reach it, and that is not their fault.
    """
    cutoff = _lost_cutoff(ctx, listening_since)
    if cutoff is None:
        return
    rows = (await session.scalars(select(RunnerRow).where(*_lost(ctx, cutoff)))).all()
    for runner in rows:
        runner.status = RunnerStatus.OFFLINE.value
        mark_changed(session, work=True)
        await _fail_active_jobs(
            ctx, session, runner, f"runner '{runner.name}' stopped sending heartbeats"
        )


async def any_lost_runners(
    ctx: ServerContext, session: AsyncSession, *, listening_since: datetime | None = None
) -> bool:
    """Whether `mark_lost_runners` would find a runner to take offline now."""
    cutoff = _lost_cutoff(ctx, listening_since)
    if cutoff is None:
        return False
    found = await session.scalar(select(RunnerRow.id).where(*_lost(ctx, cutoff)).limit(1))
    return found is not None


def _lost_cutoff(ctx: ServerContext, listening_since: datetime | None) -> datetime | None:
    """Heartbeats older than this are lost; None while the server has listened for less
    than that."""
    since = max(listening_since or ctx.started_at, ctx.started_at)
    cutoff = ctx.clock() - timedelta(seconds=ctx.settings.runner_heartbeat_timeout)
    return None if cutoff < since else cutoff


def _lost(ctx: ServerContext, cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """Online, no heartbeat since `cutoff`, and no claim waiting or ended since then in this
    process (`ServerContext.claims`)."""
    lost = (RunnerRow.status != RunnerStatus.OFFLINE.value, RunnerRow.last_heartbeat < cutoff)
    alive = ctx.claims.alive_since(cutoff)
    return (*lost, RunnerRow.id.not_in(alive)) if alive else lost


async def _fail_active_jobs(
    ctx: ServerContext, session: AsyncSession, runner: RunnerRow, message: str
) -> None:
    """The runner's jobs are lost: re-queue those whose `spec.retry` allows another attempt,
    fail the others with `runner_lost`."""
    for job in await active_jobs(session, runner.id):
        await _lose(ctx, session, job, message)


async def _lose(ctx: ServerContext, session: AsyncSession, job: JobRow, message: str) -> None:
    """A job whose runner lost it: re-queued when `spec.retry` allows, else `runner_lost`
    (`jobs.retry_or_fail`). The history keeps the `runner_lost` entry (it counts attempts)."""
    await job_service.retry_or_fail(
        session, job, now=ctx.clock(), reason=TerminationReason.RUNNER_LOST, message=message
    )
