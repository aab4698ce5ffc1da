"""The scheduler loop: runs a tick whenever there may be new work (`ServerContext.work`: a
submit, a finished job, a runner that came or changed), and at least every second while a
job is unfinished or a cloud backend is configured. A server with nothing to do sleeps until
the next time something could happen by itself: the earliest moment a runner's silence
would take it offline (`Scheduler.idle_sleep`); it does not poll.

A tick (a) fails jobs whose dependencies failed or were stopped, (b) takes runners that
stopped sending heartbeats offline and fails their jobs, (c) ends jobs stuck in a state past
its deadline (`deadlines.py`), (d) fails jobs no runner could ever take — or, when cloud
backends are configured, marks them `pending` (`waiting_for_instance`) for the provisioner
(`provisioning.py`, run after the tick's transaction, at least once per interval) — and
marks the rest `pending` with the reason they wait. Assigning jobs is not done here:
runners claim them (`services/claims.py`).

Silence and deadlines count only over time the scheduler was listening: a wake-up long
after the one it planned (the machine was suspended, the process stalled) starts the count
afresh, since runners could not reach a server that did not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.resources import HostResources
from dstack.models.runner import RunnerStatus
from dstack.server.context import Notifier, ServerContext
from dstack.server.db.models import UNFINISHED_JOB, BackendRow, JobRow, RunnerRow
from dstack.server.scheduler import deadlines
from dstack.server.scheduler.provisioning import Provisioner
from dstack.server.services import gangs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services.claims import WAITING_STATUSES, dependency_statuses
from dstack.server.services.matching import (
    describe_labels,
    fits_ever,
    labels_match,
    no_capacity_message,
    waiting_message,
)

logger = logging.getLogger(__name__)

_COALESCE_SECONDS = 0.02
_ROUTINE_SECONDS = 0.2
"""How long after its last tick the scheduler lets jobs done alone wait for other changes
(`ServerContext.judge`): a run of many short jobs ends one every few milliseconds, and a
tick for each (a write transaction judging their dependents) competed with their runner."""
_IDLE_MAX_SECONDS = 3600.0
_FAILED = frozenset({JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.ABORTED.value})

_PROVISIONING = frozenset(
    {TerminationReason.WAITING_FOR_INSTANCE.value, TerminationReason.NO_CAPACITY.value}
)

Hosts = list[tuple[str, HostResources]]
# name → labels of every registered runner
Labels = dict[str, dict[str, str]]


class Scheduler:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        # The runners (names, resources, labels) the last tick judged waiting jobs against.
        self._judged_hosts: str | None = None
        # The runners as last read, validated: ticks come with every change, runners rarely.
        self._known_hosts: tuple[str, Hosts, Labels] | None = None
        # The last wake-up, and since when the scheduler has been listening without a stall.
        self._woke_at: datetime | None = None
        self._listening_since = ctx.started_at
        # Deadlines are looked for once per `scheduler_interval`, not at every wake-up.
        self._deadlines_at: datetime | None = None
        # A job the last judgement left waiting out the no-runner grace (a gang with too
        # few runners): judged again once per interval until the grace ends, as no change
        # of runners or jobs would bring it up.
        self._in_grace = False
        self.provisioner = Provisioner(ctx)
        # The provisioner runs once per `scheduler_interval`, and at once after a tick that
        # gave it a job.
        self._provisioned_at: datetime | None = None
        self._provision_now = False
        self._backends = False  # whether any cloud backend is configured (as last read)
        # When the loop planned to wake next (None: at once, or when `tick` is called by hand).
        self._planned: datetime | None = None
        self.wakeups = 0
        """Ticks run by `run_forever`: an idle server's stays put (tests count them)."""

    async def run_forever(self) -> None:
        """Tick until cancelled. A failing tick is logged and retried on the next one."""
        while True:
            event = self.ctx.work.current()
            self.wakeups += 1
            ticked = asyncio.get_running_loop().time()
            self.ctx.judge_soon = False
            pause = self.ctx.settings.scheduler_interval
            try:
                await self.tick()
                pause = await self.idle_sleep()
            except Exception:
                logger.exception("scheduler tick failed")
            self._planned = self.ctx.clock() + timedelta(seconds=pause)
            await Notifier.wait(event, pause)
            # Changes come in bursts (many runners finishing jobs, a run of many jobs): one
            # tick after a short pause judges them all, instead of one tick each competing
            # with the claims for the database. Claims never wait for a tick.
            await asyncio.sleep(_COALESCE_SECONDS)
            if event.is_set():  # woken by a change, not by the planned time
                await self._routine_pause(ticked)

    async def _routine_pause(self, ticked: float) -> None:
        """When only jobs done came since the last tick: wait until `_ROUTINE_SECONDS`
        after it, unless another kind of change comes first."""
        judge = self.ctx.judge.current()
        if self.ctx.judge_soon:
            return
        left = ticked + _ROUTINE_SECONDS - asyncio.get_running_loop().time()
        await Notifier.wait(judge, left)

    async def tick(self) -> None:
        await self._judge()
        if self._provisioning_due():
            await self.provisioner.step()

    async def idle_sleep(self) -> float:
        """Seconds until the next wake-up when no change comes first: `scheduler_interval`
        while a job is unfinished, a cloud backend is configured or a gang waits out its
        grace (deadlines, silences and offers are then looked at each interval); else until
        the earliest moment a runner that stays silent would go offline (at least an
        interval; a runner whose claim waits is silent from that claim's deadline), or for an
        hour when no runner is online (only a change can start work)."""
        settings = self.ctx.settings
        if self._in_grace:
            return settings.scheduler_interval
        async with self.ctx.read() as session:
            if await job_service.any_unfinished(session):
                return settings.scheduler_interval
            if await session.scalar(select(BackendRow.name).limit(1)) is not None:
                return settings.scheduler_interval
            online = (
                await session.execute(
                    select(RunnerRow.id, RunnerRow.last_heartbeat).where(
                        RunnerRow.status != RunnerStatus.OFFLINE.value
                    )
                )
            ).all()
        if not online:
            return _IDLE_MAX_SECONDS
        silent = [self._silent_until(runner_id, heard) for runner_id, heard in online]
        known = [moment for moment in silent if moment is not None]
        if len(known) < len(silent):
            return settings.runner_heartbeat_timeout
        expiry = min(known) + timedelta(seconds=settings.runner_heartbeat_timeout)
        left = (expiry - self.ctx.clock()).total_seconds() + _COALESCE_SECONDS
        return max(left, settings.scheduler_interval)

    def _silent_until(self, runner_id: str, heard: datetime | None) -> datetime | None:
        """The moment from which a runner may count as silent: for one whose claim waits, its
        deadline (a claim that ends before it, its runner gone, wakes the scheduler: see
        `services/claims._claim`), so an idle runner long-polling and its server do not
        wake each other more than once per claim; None for one whose claim has no
        deadline known."""
        if self.ctx.claims.waiting(runner_id):
            return self.ctx.claims.until(runner_id)
        return self._silent_since(runner_id, heard)

    def _silent_since(self, runner_id: str, heard: datetime | None) -> datetime:
        """Since when a runner counts as silent: its last heartbeat or claim, or when the
        scheduler last started listening, whichever is latest."""
        moments = [self._listening_since, self.ctx.claims.ended(runner_id), heard]
        return max(m if m.tzinfo is not None else m.replace(tzinfo=UTC) for m in moments if m)

    def _provisioning_due(self) -> bool:
        now = self.ctx.clock()
        interval = timedelta(seconds=self.ctx.settings.scheduler_interval)
        due = self._provision_now or (
            self._provisioned_at is None or now - self._provisioned_at >= interval
        )
        if due:
            self._provisioned_at, self._provision_now = now, False
        return due

    async def _judge(self) -> None:
        # Ticks come with every change; most find nothing to do. Finding that out needs no
        # write transaction, which would make claims and reports wait for their turn.
        since = self._listen()
        look_for_overdue = self._deadlines_due()
        if not await self._has_work(since, look_for_overdue):
            return
        async with self.ctx.transaction() as session:
            await runner_service.mark_lost_runners(self.ctx, session, listening_since=since)
            if look_for_overdue:
                await deadlines.expire_overdue(self.ctx, session, since=since)
                await gangs.expire_reservations(self.ctx, session)
            hosts, labels, fingerprint = await self._hosts(session)
            self._backends = await session.scalar(select(BackendRow.name).limit(1)) is not None
            # UNFINISHED_JOB: the partial index, not a walk of every job (see db/models.py)
            query = select(JobRow).where(UNFINISHED_JOB, JobRow.status.in_(WAITING_STATUSES))
            in_grace, self._in_grace = self._in_grace, False
            if hosts and fingerprint == self._judged_hosts and not in_grace:
                # A pending job without dependencies was judged against these very runners,
                # and nothing else decides its fate: only new jobs and jobs whose
                # dependencies may have moved need a look.
                query = query.where(
                    or_(
                        JobRow.status == JobStatus.SUBMITTED.value,
                        cast(JobRow.deps, String) != "[]",
                    )
                )
            waiting = (await session.scalars(query.order_by(JobRow.run_name, JobRow.index))).all()
            statuses = await dependency_statuses(session, waiting)
            for job in waiting:
                await self._update_waiting(session, job, statuses, hosts, labels)
                statuses[(job.run_name, job.index)] = job.status
        self._judged_hosts = fingerprint  # only once the judgements are committed

    def _listen(self) -> datetime:
        """Note this wake-up; since when the scheduler has listened without a stall.

        Wake-ups come when planned (`idle_sleep`) or earlier; one later than that (than the
        last wake-up, for ticks called by hand) by half the heartbeat timeout (or three
        intervals, if more) means the server itself did not run.
        """
        now = self.ctx.clock()
        settings = self.ctx.settings
        stall = max(settings.runner_heartbeat_timeout / 2, 3 * settings.scheduler_interval)
        expected = self._planned or self._woke_at
        if expected is not None and now - expected > timedelta(seconds=stall):
            late = now - expected
            logger.warning("the scheduler did not run for %s; silences count afresh", late)
            self._listening_since = now
        self._woke_at = now
        return self._listening_since

    def _deadlines_due(self) -> bool:
        """Whether this tick looks for overdue jobs: at most once per `scheduler_interval`
        (limits are minutes long; the wake-ups of a busy server come many a second)."""
        now = self.ctx.clock()
        interval = timedelta(seconds=self.ctx.settings.scheduler_interval)
        if self._deadlines_at is not None and now - self._deadlines_at < interval:
            return False
        self._deadlines_at = now
        return True

    async def _has_work(self, since: datetime, look_for_overdue: bool) -> bool:
        """Whether a tick could change anything: a runner went silent, a job is past a
        deadline, the runners changed since the last judgement (or there are none), or a
        waiting job is new or has dependencies that may have moved."""
        async with self.ctx.read() as session:
            if await runner_service.any_lost_runners(self.ctx, session, listening_since=since):
                return True
            if look_for_overdue and await deadlines.any_overdue(self.ctx, session, since=since):
                return True
            if look_for_overdue and (self._in_grace or await gangs.any_reservation(session)):
                return True
            hosts, _, fingerprint = await self._hosts(session)
            if not hosts or fingerprint != self._judged_hosts:
                return True
            unjudged = select(JobRow.id).where(
                UNFINISHED_JOB,
                JobRow.status.in_(WAITING_STATUSES),
                or_(JobRow.status == JobStatus.SUBMITTED.value, cast(JobRow.deps, String) != "[]"),
            )
            return await session.scalar(unjudged.limit(1)) is not None

    async def _hosts(self, session: AsyncSession) -> tuple[Hosts, Labels, str]:
        """The runners' resources and labels, and a fingerprint of both; validated again
        only when the fingerprint changed."""
        rows = await _runner_rows(session)
        fingerprint = json.dumps(rows, sort_keys=True)
        if self._known_hosts is None or self._known_hosts[0] != fingerprint:
            hosts = [(name, HostResources.model_validate(res)) for name, res, _ in rows]
            self._known_hosts = (fingerprint, hosts, {name: lab for name, _, lab in rows})
        _, hosts, labels = self._known_hosts
        return hosts, labels, fingerprint

    async def _update_waiting(
        self,
        session: AsyncSession,
        job: JobRow,
        statuses: dict[tuple[str, int], str],
        all_hosts: Hosts,
        labels: Labels,
    ) -> None:
        if job.runner_id is not None:  # a node of a gang, reserved for its runner's claim
            return
        hosts = _labelled(job, all_hosts, labels)
        deps = {d: statuses.get((job.run_name, d)) for d in job.deps}
        failed = sorted(d for d, s in deps.items() if s in _FAILED)
        if failed:
            names = await _job_names(session, job.run_name, failed)
            message = f"dependency {names} of run {job.run_name} did not succeed"
            await self._set(
                session, job, JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED, message
            )
            return
        spec = JobSpec.model_validate(job.spec).resources
        if spec.nodes > 1:
            short = gangs.shortage(spec, hosts)
            if short is not None:
                await self._too_few_runners(session, job, short)
                return
        fits = any(fits_ever(spec, host) for _, host in hosts)
        if not fits and not self._backends:
            await self._no_runner(session, job, hosts, registered=bool(all_hosts))
            return
        waiting_for = sorted(d for d, s in deps.items() if s != JobStatus.DONE.value)
        if waiting_for:
            message = (
                f"waiting for {await _job_names(session, job.run_name, waiting_for)} to finish"
            )
            await self._set(
                session, job, JobStatus.PENDING, TerminationReason.WAITING_FOR_DEPENDENCIES, message
            )
            return
        if not fits:
            await self._wants_instance(session, job)
            return
        await self._set(
            session,
            job,
            JobStatus.PENDING,
            TerminationReason.WAITING_FOR_RUNNER,
            waiting_message(spec, hosts)
            if spec.nodes <= 1
            else f"waiting for {spec.nodes} runners that fit to be free at once",
        )

    async def _too_few_runners(self, session: AsyncSession, job: JobRow, short: str) -> None:
        """A gang fewer runners could ever take than it has nodes: it waits while the server
        is young (`no_runner_grace_seconds`), then fails. Cloud instances are not created
        for gangs."""
        young = (self.ctx.clock() - self.ctx.started_at).total_seconds()
        if self._backends:
            short += " (cloud instances are not created for multi-node runs)"
        if young < self.ctx.settings.no_runner_grace_seconds:
            await self._set(
                session, job, JobStatus.PENDING, TerminationReason.WAITING_FOR_RUNNER, short
            )
            self._in_grace = True
            return
        await self._set(session, job, JobStatus.FAILED, TerminationReason.NO_CAPACITY, short)

    async def _wants_instance(self, session: AsyncSession, job: JobRow) -> None:
        """No registered runner fits the job, but a backend may: the provisioner's now
        (left alone while it waits for an instance or for capacity)."""
        if job.status == JobStatus.PENDING.value and job.reason in _PROVISIONING:
            return
        message = "looking for a cloud offer"
        await self._set(
            session, job, JobStatus.PENDING, TerminationReason.WAITING_FOR_INSTANCE, message
        )
        self._provision_now = True

    async def _no_runner(
        self, session: AsyncSession, job: JobRow, hosts: Hosts, *, registered: bool
    ) -> None:
        """Fail the job with the nearest offers, unless the server just started and no runner
        registered yet. `hosts` are the runners having the job's labels."""
        spec = JobSpec.model_validate(job.spec).resources
        young = (self.ctx.clock() - self.ctx.started_at).total_seconds()
        if not registered and young < self.ctx.settings.no_runner_grace_seconds:
            message = "waiting for a runner to register"
            await self._set(
                session, job, JobStatus.PENDING, TerminationReason.WAITING_FOR_RUNNER, message
            )
            return
        message = no_capacity_message(spec, hosts)
        wanted = JobSpec.model_validate(job.spec).labels
        if wanted and not hosts:
            message = f"no runner has the labels {describe_labels(wanted)}"
        await self._set(session, job, JobStatus.FAILED, TerminationReason.NO_CAPACITY, message)

    async def _set(
        self,
        session: AsyncSession,
        job: JobRow,
        status: JobStatus,
        reason: TerminationReason,
        message: str,
    ) -> None:
        await job_service.set_status(
            session, job, status, now=self.ctx.clock(), reason=reason, message=message
        )


async def _runner_rows(session: AsyncSession) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every registered runner, online or not: one that is restarting still counts; one
    whose machine is being taken back (a spot interruption) does not."""
    query = select(RunnerRow.name, RunnerRow.resources, RunnerRow.labels)
    query = query.where(RunnerRow.status != RunnerStatus.INTERRUPTED.value)
    rows = await session.execute(query.order_by(RunnerRow.name))
    return [(name, resources, dict(labels)) for name, resources, labels in rows]


def _labelled(job: JobRow, hosts: Hosts, labels: Labels) -> Hosts:
    """The runners that have every label the job asks for."""
    wanted = JobSpec.model_validate(job.spec).labels
    return [(name, host) for name, host in hosts if labels_match(wanted, labels.get(name, {}))]


async def _job_names(session: AsyncSession, run_name: str, indexes: list[int]) -> str:
    """`prepare`, `prepare, split`: the workflows of a run's jobs, as messages name them
    (each once: the nodes of a multi-node job share its name); `job N` for one without."""
    rows = await session.execute(
        select(JobRow.index, JobRow.workflow_name).where(
            JobRow.run_name == run_name, JobRow.index.in_(indexes)
        )
    )
    named: dict[int, str | None] = dict(rows.all())
    names = dict.fromkeys(named.get(i) or f"job {i}" for i in sorted(indexes))
    return ", ".join(names)
