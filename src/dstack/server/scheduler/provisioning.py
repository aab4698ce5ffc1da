"""The provisioner: creates cloud instances for jobs no registered runner fits, and
terminates them when they are of no use (README.md, "Cloud runners: how provisioning works").

The scheduler's tick marks such a job `pending` (`waiting_for_instance`) when backends are
configured; each provisioner step then

- on its first run, terminates the instances tagged with this server's id that the database
  does not know or knows as terminated (what a crashed server left running);
- looks at every live instance: one whose job ended before it was ready, one whose runner
  did not register in time, one whose runner reported a spot interruption and handed its
  jobs back, one idle for its backend's `idle_timeout`, one the cloud says is gone
  (terminated, or interrupted: a spot instance taken back) is terminated, and its runner
  forgotten (its jobs lost: re-queued or `runner_lost`);
- gives each waiting job without an instance the cheapest fitting offer it has not tried
  in this round (a round starts at each re-queue; spot for `interruptible` jobs,
  on-demand otherwise), within each backend's `max_instances` and `max_price`. With none
  left, the job waits (`pending`, `no_capacity`) `no_capacity_backoff` seconds, doubling,
  then tries every offer again; after
  `no_capacity_timeout` it fails `no_capacity`, listing the offers it tried.

Cloud calls run in a worker thread and never inside a transaction: an instance is recorded
`creating` first, then created, then recorded `booting` with its cloud id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack import __version__
from dstack.backends.base import Compute
from dstack.backends.registry import METADATA_URLS
from dstack.backends.userdata import runner_labels, user_data
from dstack.errors import BackendError
from dstack.models.backends import (
    BackendConfig,
    InstanceOffer,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
)
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.runner import RunnerStatus
from dstack.server.context import ServerContext
from dstack.server.db.models import InstanceRow, JobRow, RunnerRow
from dstack.server.services import instances as instance_service
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.services.backends import configured
from dstack.server.services.matching import describe_request, labels_match

logger = logging.getLogger(__name__)

_GONE = frozenset({InstanceState.TERMINATED, InstanceState.INTERRUPTED})
_MAX_BACKOFF_STEPS = 3  # the wait doubles up to 8 times `no_capacity_backoff`


@dataclass
class Backend:
    config: BackendConfig
    compute: Compute


Backends = dict[str, Backend]


class Provisioner:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._reconciled = False
        self._described: dict[str, datetime] = {}  # instance id → when last described

    async def step(self) -> None:
        """One pass: reconcile (first time), check live instances, provision waiting jobs.
        A failure with one instance or job is logged and does not stop the others."""
        async with self.ctx.read() as session:
            backends = {
                c.name: Backend(c, compute) for c, compute in await configured(self.ctx, session)
            }
            alive = await instance_service.alive(session)
        if not backends and not alive:
            return
        if not self._reconciled:
            await self._reconcile(backends)
            self._reconciled = True
        for row in alive:
            await _guarded(self._check(row, backends), f"checking instance {row.name}")
        async with self.ctx.read() as session:
            waiting = await instance_service.waiting_jobs(session)
        for job in waiting:
            await _guarded(self._provision(job, backends), f"provisioning for job {job.id}")

    # --- a crashed server leaves nothing running ---------------------------------------

    async def _reconcile(self, backends: Backends) -> None:
        server = await runner_service.server_id(self.ctx)
        for backend in backends.values():
            wanted = {instance_service.SERVER_TAG: server}
            try:
                found = await asyncio.to_thread(backend.compute.list_instances, wanted)
            except BackendError as exc:
                logger.warning("backend %s: cannot list instances: %s", backend.config.name, exc)
                continue
            async with self.ctx.read() as session:
                names = [i.tags.get(instance_service.NAME_TAG, "") for i in found]
                rows = await session.scalars(select(InstanceRow).where(InstanceRow.name.in_(names)))
                known = {r.name: r.state for r in rows}
            for instance in found:
                state = known.get(instance.tags.get(instance_service.NAME_TAG, ""))
                if state is None or state == InstanceStatus.TERMINATED.value:
                    logger.warning("terminating instance %s, unknown to this server", instance.id)
                    await _guarded(
                        asyncio.to_thread(backend.compute.terminate, instance.id),
                        f"terminating {instance.id}",
                    )

    # --- live instances ------------------------------------------------------------------

    async def _check(self, row: InstanceRow, backends: Backends) -> None:
        backend = backends.get(row.backend)
        if backend is None:
            return  # its backend was deleted: nothing to call
        reason = await self._why_terminate(row, backend)
        if reason is not None:
            await self.terminate(row.id, backend, reason)

    async def _why_terminate(self, row: InstanceRow, backend: Backend) -> str | None:
        """Why `row` should go now; None while it is of use."""
        settings, now = self.ctx.settings, self.ctx.clock()
        if row.state == InstanceStatus.TERMINATING.value:
            return row.reason or "terminating"
        if row.state in instance_service.BOOTING:
            if not await self._job_waits(row.job_id):
                return "its job ended before the instance was ready"
            timeout = settings.instance_registration_timeout
            if now - row.created_at > timedelta(seconds=timeout):
                return f"its runner did not register within {timeout:g}s"
        if row.state == InstanceStatus.READY.value and await self._handed_back(row):
            return "its runner reported a spot interruption"
        gone = await self._gone(row, backend, now)
        if gone is not None:
            return gone
        if row.state == InstanceStatus.READY.value:
            return await self._idle(row.id, backend.config.limits.idle_timeout)
        return None

    async def _handed_back(self, row: InstanceRow) -> bool:
        """Whether its runner reported a spot interruption and holds no job any more (each
        one synced and re-queued): the instance is of no use, and the cloud takes it within
        minutes anyway. Terminated now, it stops costing and frees its backend's
        `max_instances` slot for the new instance the re-queued job needs."""
        if row.runner_id is None:
            return False
        async with self.ctx.read() as session:
            runner = await session.get(RunnerRow, row.runner_id)
            if runner is None or runner.status != RunnerStatus.INTERRUPTED.value:
                return False
            return not await runner_service.active_jobs(session, row.runner_id)

    async def _job_waits(self, job_id: str | None) -> bool:
        async with self.ctx.read() as session:
            job = await session.get(JobRow, job_id) if job_id else None
        return job is not None and not JobStatus(job.status).is_finished()

    async def _gone(self, row: InstanceRow, backend: Backend, now: datetime) -> str | None:
        """Ask the cloud (once per `instance_poll_interval`) whether the instance is gone."""
        if row.cloud_id is None:
            return None
        last = self._described.get(row.id)
        if last is not None and now - last < timedelta(
            seconds=self.ctx.settings.instance_poll_interval
        ):
            return None
        self._described[row.id] = now
        described = await asyncio.to_thread(backend.compute.describe, row.cloud_id)
        if described is None or described.state is InstanceState.TERMINATED:
            return "the cloud terminated it"
        if described.state is InstanceState.INTERRUPTED:
            return "the cloud interrupted it (spot capacity taken back)"
        return None

    async def _idle(self, instance_id: str, idle_timeout: float) -> str | None:
        """Track since when its runner holds no job; the reason once that is too long."""
        async with self.ctx.transaction() as session:
            row = await session.get(InstanceRow, instance_id)
            if row is None or row.runner_id is None:
                return None
            if await runner_service.active_jobs(session, row.runner_id):
                row.idle_since = None
                return None
            now = self.ctx.clock()
            row.idle_since = await instance_service.idle_since(session, row, now)
            if now - row.idle_since >= timedelta(seconds=idle_timeout):
                return f"idle for {idle_timeout:g}s"
        return None

    async def terminate(self, instance_id: str, backend: Backend, reason: str) -> None:
        """Record it `terminating` (forgetting its runner), ask the cloud, record it
        `terminated`. A failing call leaves it `terminating`: the next step asks again."""
        async with self.ctx.transaction() as session:
            row = await session.get(InstanceRow, instance_id)
            if row is None or not await instance_service.start_terminating(
                self.ctx, session, row, reason
            ):
                return
            cloud_id, name = row.cloud_id, row.name
        await asyncio.to_thread(_terminate, backend.compute, cloud_id, name)
        async with self.ctx.transaction() as session:
            row = await session.get(InstanceRow, instance_id)
            if row is not None:
                instance_service.record_terminated(self.ctx, row)
        self._described.pop(instance_id, None)
        logger.info("terminated instance %s (%s): %s", name, cloud_id, reason)

    # --- waiting jobs ----------------------------------------------------------------------

    async def _provision(self, job: JobRow, backends: Backends) -> None:
        if await self._waits_out(job):
            return
        async with self.ctx.read() as session:
            if any(
                r.state in instance_service.ALIVE
                for r in await instance_service.of_job(session, job.id)
            ):
                return  # its instance is on its way
        spec = JobSpec.model_validate(job.spec)
        fitting = await _offers(spec, backends)
        offers = [o for o in fitting if _within_max_price(o, backends)]
        if not offers:
            await self._fail(job.id, _no_offer_message(spec, backends, fitting))
            return
        while True:
            async with self.ctx.transaction() as session:
                # Locked (PostgreSQL) so that two servers never both create one for it.
                fresh = await session.get(JobRow, job.id, with_for_update=True)
                if fresh is None or not _wants_instance(fresh):
                    return
                mine = await instance_service.of_job(session, job.id)
                if any(r.state in instance_service.ALIVE for r in mine):
                    return  # never two instances for one job
                start = instance_service.round_start(fresh)
                tried = {_key_of(r) for r in mine if start is None or r.created_at > start}
                full = {name for name in backends if await _at_limit(session, backends[name])}
                candidates = [o for o in offers if _key(o) not in tried]
                offer = next((o for o in candidates if o.backend not in full), None)
                if offer is None:
                    await self._no_offer_left(session, fresh, candidates, mine, full, backends)
                    return
                row, token = await instance_service.record_creating(
                    self.ctx, session, job=fresh, offer=offer
                )
                instance_id, name = row.id, row.name
            if await self._create(instance_id, name, token, offer, backends[offer.backend]):
                return

    async def _create(
        self, instance_id: str, name: str, token: str, offer: InstanceOffer, backend: Backend
    ) -> bool:
        """Ask the cloud for the instance recorded `creating`; False when it could not
        (the row is then `terminated` with the cloud's answer, and the job moves on)."""
        server = await runner_service.server_id(self.ctx)
        settings = self.ctx.settings
        request = LaunchRequest(
            name=name,
            offer=offer,
            user_data=user_data(
                settings.resolved_public_url(),
                token,
                name,
                runner_labels(offer.backend, name, offer.instance_type, offer.spot),
                __version__,
                metadata_url=METADATA_URLS.get(backend.config.type) if offer.spot else None,
            ),
            tags=instance_service.tags(server, name, offer.backend),
        )
        try:
            created = await asyncio.to_thread(backend.compute.create, request)
        except BackendError as exc:
            logger.info("instance %s of %s: %s", name, offer.instance_type, exc)
            async with self.ctx.transaction() as session:
                row = await session.get(InstanceRow, instance_id)
                if row is not None:
                    instance_service.record_terminated(self.ctx, row, exc.message)
            return False
        await instance_service.record_created(
            self.ctx, instance_id=instance_id, cloud_id=created.id
        )
        return True

    async def _waits_out(self, job: JobRow) -> bool:
        """Whether a job waiting for capacity should go on waiting (its backoff has not
        passed); past `no_capacity_timeout` it fails."""
        if job.reason != TerminationReason.NO_CAPACITY.value:
            return False
        waits = instance_service.no_capacity_waits(job)
        if not waits:
            return False
        now, settings = self.ctx.clock(), self.ctx.settings
        if now - waits[0] >= timedelta(seconds=settings.no_capacity_timeout):
            async with self.ctx.read() as session:
                tried = await instance_service.of_job(session, job.id)
            await self._fail(job.id, _tried_message(tried, settings.no_capacity_timeout))
            return True
        return now - waits[-1] < timedelta(seconds=_backoff(self.ctx, len(waits)))

    async def _no_offer_left(
        self,
        session: AsyncSession,
        job: JobRow,
        candidates: Sequence[InstanceOffer],
        tried: Sequence[InstanceRow],
        full: set[str],
        backends: Backends,
    ) -> None:
        """Every offer of this round was tried (wait for capacity), or those left are of
        backends at their `max_instances` (wait for one to free)."""
        now = self.ctx.clock()
        if candidates:
            limits = ", ".join(
                f"{n} ({backends[n].config.limits.max_instances})" for n in sorted(full)
            )
            message = f"waiting for an instance: backends at their instance limit: {limits}"
            await job_service.set_status(
                session,
                job,
                JobStatus.PENDING,
                now=now,
                reason=TerminationReason.WAITING_FOR_INSTANCE,
                message=message,
            )
            return
        rounds = len(instance_service.no_capacity_waits(job)) + 1
        backoff = _backoff(self.ctx, rounds)
        offers = ", ".join(dict.fromkeys(_describe_row(r) for r in tried)) or "none"
        message = f"no capacity (round {rounds}): tried {offers}; trying again in {backoff:g}s"
        await job_service.set_status(
            session,
            job,
            JobStatus.PENDING,
            now=now,
            reason=TerminationReason.NO_CAPACITY,
            message=message,
        )

    async def _fail(self, job_id: str, message: str) -> None:
        async with self.ctx.transaction() as session:
            job = await session.get(JobRow, job_id)
            if job is not None and _wants_instance(job):
                await job_service.set_status(
                    session,
                    job,
                    JobStatus.FAILED,
                    now=self.ctx.clock(),
                    reason=TerminationReason.NO_CAPACITY,
                    message=message,
                )


async def _offers(spec: JobSpec, backends: Backends) -> list[InstanceOffer]:
    """Every backend's offers that fit the job (its market and labels), cheapest first,
    whatever their price (`_within_max_price` says which a backend allows)."""
    spot = spec.resources.interruptible
    found: list[InstanceOffer] = []
    for backend in backends.values():
        try:
            offers = await asyncio.to_thread(backend.compute.offers, spec.resources, spot=spot)
        except BackendError as exc:
            logger.warning("backend %s: no offers: %s", backend.config.name, exc)
            continue
        found += [
            o
            for o in offers
            if labels_match(spec.labels, runner_labels(o.backend, "", o.instance_type, o.spot))
        ]
    return sorted(found, key=lambda o: (o.price, o.backend, o.instance_type))


def _within_max_price(offer: InstanceOffer, backends: Backends) -> bool:
    cap = backends[offer.backend].config.limits.max_price
    return cap is None or offer.price <= cap


async def _at_limit(session: AsyncSession, backend: Backend) -> bool:
    alive = await instance_service.count_alive(session, backend.config.name)
    return alive >= backend.config.limits.max_instances


def _wants_instance(job: JobRow) -> bool:
    return job.status == JobStatus.PENDING.value and job.reason in (
        TerminationReason.WAITING_FOR_INSTANCE.value,
        TerminationReason.NO_CAPACITY.value,
    )


def _terminate(compute: Compute, cloud_id: str | None, name: str) -> None:
    """Terminate by cloud id; by the name tag when the create call never answered."""
    if cloud_id is not None:
        compute.terminate(cloud_id)
        return
    for instance in compute.list_instances({instance_service.NAME_TAG: name}):
        compute.terminate(instance.id)


def _backoff(ctx: ServerContext, rounds: int) -> float:
    steps = min(max(rounds - 1, 0), _MAX_BACKOFF_STEPS)
    return float(ctx.settings.no_capacity_backoff * (2**steps))


def _key(offer: InstanceOffer) -> tuple[str, str, bool]:
    return (offer.backend, offer.instance_type, offer.spot)


def _key_of(row: InstanceRow) -> tuple[str, str, bool]:
    return (row.backend, row.instance_type, row.spot)


def _describe_row(row: InstanceRow) -> str:
    return instance_service.describe_offer(InstanceOffer.model_validate(row.offer))


def _tried_message(tried: Sequence[InstanceRow], timeout: float) -> str:
    offers = ", ".join(dict.fromkeys(_describe_row(r) for r in tried)) or "none"
    return f"no capacity within {timeout:g}s; offers tried: {offers}"


def _no_offer_message(spec: JobSpec, backends: Backends, fitting: Sequence[InstanceOffer]) -> str:
    """Why no backend can create an instance for the job: no offer fits, or every one
    that does is dearer than its backend's `max_price` (the limits and the cheapest named)."""
    names = ", ".join(sorted(backends)) or "none"
    market = instance_service.market(spec.resources.interruptible)
    asked = f"asked for {describe_request(spec.resources)}: no runner fits, and"
    if not fitting:
        return f"{asked} no {market} offer of the backends ({names}) does (see `dstack offers`)"
    caps = ", ".join(
        f"{name} {instance_service.format_price(cap)}/h"
        for name in sorted({o.backend for o in fitting})
        if (cap := backends[name].config.limits.max_price) is not None
    )
    return (
        f"{asked} every {market} offer that fits is over its backend's max price ({caps}); "
        f"the cheapest: {instance_service.describe_offer(fitting[0])} (see `dstack offers`)"
    )


async def _guarded(work: Awaitable[object], what: str) -> None:
    """Await `work`; a failure is logged (the next step tries again)."""
    try:
        await work
    except Exception:
        logger.exception("%s failed", what)
