from __future__ import annotations

import asyncio
import contextlib

import pytest

from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import HeartbeatRequest, JobStatusUpdate
from dstack.server.context import ServerContext
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service

from .conftest import FakeClock, host, job, register, submission

pytestmark = pytest.mark.anyio


async def test_job_no_runner_can_ever_take_fails_with_no_capacity(ctx: ServerContext) -> None:
    await register(ctx, "local", host(cpus=2, memory_gb=24))
    run = await runs.submit_run(ctx, request=submission(job(gpus=4, gpu_name="A100")))

    await Scheduler(ctx).tick()

    failed = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert failed.status is JobStatus.FAILED
    assert failed.reason is TerminationReason.NO_CAPACITY
    assert failed.message == "asked for 4xA100; runners: local (2 CPU, 24 GiB)"


async def test_without_runners_jobs_wait_during_the_grace_period(
    ctx: ServerContext, clock: FakeClock
) -> None:
    run = await runs.submit_run(ctx, request=submission(job()))

    await Scheduler(ctx).tick()
    waiting = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert (waiting.status, waiting.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_RUNNER,
    )

    clock.advance(ctx.settings.no_runner_grace_seconds + 1)
    await Scheduler(ctx).tick()
    failed = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert failed.reason is TerminationReason.NO_CAPACITY
    assert "none registered" in (failed.message or "")


async def test_dependency_failure_propagates_through_the_chain(ctx: ServerContext) -> None:
    runner_id = await register(ctx)
    request = submission(job(name="prep"), job(name="train", deps=[0]), job(name="eval", deps=[1]))
    run = await runs.submit_run(ctx, request=request)
    await Scheduler(ctx).tick()
    waiting = (await runs.get_run(ctx, name=run.name)).jobs
    assert [j.reason for j in waiting] == [
        TerminationReason.WAITING_FOR_RUNNER,
        TerminationReason.WAITING_FOR_DEPENDENCIES,
        TerminationReason.WAITING_FOR_DEPENDENCIES,
    ]
    # Jobs are named by their workflow, not their index.
    assert [j.message for j in waiting[1:]] == [
        "waiting for prep to finish",
        "waiting for train to finish",
    ]

    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    assert assignment.job_index == 0
    update = JobStatusUpdate(status=JobStatus.FAILED, exit_code=3)
    await job_service.report_status(
        ctx, job_id=assignment.job_id, update=update, runner_id=runner_id
    )
    await Scheduler(ctx).tick()

    final = await runs.get_run(ctx, name=run.name)
    assert final.status is JobStatus.FAILED
    assert [(j.status, j.reason) for j in final.jobs] == [
        (JobStatus.FAILED, TerminationReason.EXIT_CODE),
        (JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED),
        (JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED),
    ]
    assert final.jobs[0].exit_code == 3
    assert final.jobs[1].message == f"dependency prep of run {run.name} did not succeed"


async def test_silent_runner_goes_offline_and_its_jobs_fail_runner_lost(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission(job()))
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None

    clock.advance(ctx.settings.runner_heartbeat_timeout - 1)
    await Scheduler(ctx).tick()
    assert (await runs.get_run(ctx, name=run.name)).jobs[0].status is JobStatus.PROVISIONING

    clock.advance(2)
    await Scheduler(ctx).tick()

    lost = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert (lost.status, lost.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)
    assert lost.message == "runner 'local' stopped sending heartbeats"
    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "offline"

    # The runner comes back: it is told to forget the job the server gave up on.
    answer = await runner_service.heartbeat(
        ctx, runner_id=runner_id, request=HeartbeatRequest(running_jobs=[assignment.job_id])
    )
    assert answer.forget_jobs == [assignment.job_id]
    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "ready"


async def test_status_history_and_timings(ctx: ServerContext, clock: FakeClock) -> None:
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission(job()))
    clock.advance(5)
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    for status, seconds in [(JobStatus.RUNNING, 2), (JobStatus.DONE, 10)]:
        clock.advance(seconds)
        update = JobStatusUpdate(status=status, exit_code=0 if status is JobStatus.DONE else None)
        await job_service.report_status(
            ctx, job_id=assignment.job_id, update=update, runner_id=runner_id
        )

    done = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert [h.status for h in done.history] == [
        JobStatus.SUBMITTED,
        JobStatus.PROVISIONING,
        JobStatus.RUNNING,
        JobStatus.DONE,
    ]
    assert (done.reason, done.finished_at) == (TerminationReason.DONE, clock.now)
    assert (done.timings.queued, done.timings.provisioning, done.timings.running) == (5, 2, 10)
    assert done.timings.downloading is None


async def test_a_pending_job_is_judged_again_when_its_runner_changes(ctx: ServerContext) -> None:
    await register(ctx, "box", host(cpus=8, gpus=[("A100", 40960)] * 4))
    run = await runs.submit_run(ctx, request=submission(job(gpus=4, gpu_name="A100")))
    scheduler = Scheduler(ctx)
    await scheduler.tick()
    await scheduler.tick()
    assert (await runs.get_run(ctx, name=run.name)).jobs[0].status is JobStatus.PENDING

    await register(ctx, "box", host(cpus=8))  # re-registered without its GPUs
    await scheduler.tick()

    failed = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert failed.status is JobStatus.FAILED
    assert failed.reason is TerminationReason.NO_CAPACITY


async def test_a_scheduler_that_judged_everything_still_sees_new_jobs_and_silent_runners(
    ctx: ServerContext, clock: FakeClock
) -> None:
    scheduler = Scheduler(ctx)
    runner_id = await register(ctx)
    first = await runs.submit_run(ctx, request=submission(job()))
    await scheduler.tick()
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    await scheduler.tick()  # nothing left to judge

    second = await runs.submit_run(ctx, request=submission(job()))
    await scheduler.tick()
    waiting = (await runs.get_run(ctx, name=second.name)).jobs[0]
    assert (waiting.status, waiting.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_RUNNER,
    )

    for _ in range(int(ctx.settings.runner_heartbeat_timeout) + 1):  # it wakes every second
        clock.advance(1)
        await scheduler.tick()
    lost = (await runs.get_run(ctx, name=first.name)).jobs[0]
    assert (lost.status, lost.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)


async def test_claiming_keeps_a_runner_alive_without_heartbeats(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx)
    clock.advance(ctx.settings.runner_heartbeat_timeout - 1)
    assert await claims.try_claim(ctx, runner_id=runner_id) is None  # asks; nothing to do

    clock.advance(2)
    await Scheduler(ctx).tick()

    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "ready"


async def test_an_idle_scheduler_sleeps_until_a_change_comes(ctx: ServerContext) -> None:
    ctx.settings.scheduler_interval = 0.01
    await register(ctx)  # its heartbeat is fresh: nothing can happen for the whole timeout
    scheduler = Scheduler(ctx)
    loop = asyncio.create_task(scheduler.run_forever())
    try:
        for _ in range(50):  # fifty intervals with nothing to do
            await asyncio.sleep(0.01)
        idle_wakeups = scheduler.wakeups

        submitted = await runs.submit_run(ctx, request=submission(job()))
        for _ in range(500):  # the submit wakes it: the job is judged
            waiting = (await runs.get_run(ctx, name=submitted.name)).jobs[0]
            if waiting.status is JobStatus.PENDING:
                break
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    assert idle_wakeups == 1
    assert (waiting.status, waiting.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_RUNNER,
    )
    assert scheduler.wakeups > idle_wakeups


async def test_a_runner_waiting_on_a_claim_is_alive_without_heartbeats(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx)
    timeout = ctx.settings.runner_heartbeat_timeout
    waiting = asyncio.create_task(claims.claim(ctx, runner_id=runner_id, wait_seconds=0.3))
    while not ctx.claims.waiting(runner_id):
        await asyncio.sleep(0.01)

    clock.advance(timeout + 1)
    await Scheduler(ctx).tick()
    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "ready"

    assert await waiting is None
    clock.advance(timeout - 1)
    await Scheduler(ctx).tick()
    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "ready"  # its claim ended a moment ago

    clock.advance(2)
    await Scheduler(ctx).tick()
    [runner] = await runner_service.list_runners(ctx)
    assert runner.status.value == "offline"


async def test_an_idle_scheduler_sleeps_through_a_waiting_claim_and_its_timeout(
    ctx: ServerContext,
) -> None:
    runner_id = await register(ctx)
    timeout = ctx.settings.runner_heartbeat_timeout
    waiting = asyncio.create_task(claims.claim(ctx, runner_id=runner_id, wait_seconds=60))
    try:
        while not ctx.claims.waiting(runner_id):
            await asyncio.sleep(0.01)

        # the runner cannot count as silent before its claim's deadline, a minute away
        assert await Scheduler(ctx).idle_sleep() > 60 + timeout - 1
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    # the claim is over: silent from now on, offline after the timeout
    assert await Scheduler(ctx).idle_sleep() <= timeout + 0.1


async def test_jobs_done_alone_are_judged_too_and_a_failure_at_once(ctx: ServerContext) -> None:
    """A job done is routine work (its dependents' messages): the scheduler judges it with
    the next changes or a moment later; a failure it judges as soon as it comes."""
    runner_id = await register(ctx, "box", host(cpus=2))
    submitted = await runs.submit_run(
        ctx,
        request=submission(job(name="a"), job(name="b"), job(name="c", deps=[0, 1])),
    )
    scheduler = Scheduler(ctx)
    loop = asyncio.create_task(scheduler.run_forever())

    async def dependent_when(ready: object) -> tuple[JobStatus, str | None]:
        for _ in range(1000):
            c = (await runs.get_run(ctx, name=submitted.name)).jobs[2]
            if ready(c):  # type: ignore[operator]
                break
            await asyncio.sleep(0.01)
        return c.status, c.message

    try:
        # (`claim`, not `try_claim`: a tick of the running scheduler may hold a job's row
        # for a moment, which a claim skips and waits out as a runner's does)
        first = await claims.claim(ctx, runner_id=runner_id, wait_seconds=10)
        second = await claims.claim(ctx, runner_id=runner_id, wait_seconds=10)
        assert first is not None
        assert second is not None
        waiting = await dependent_when(lambda c: c.message == "waiting for a, b to finish")
        done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
        await job_service.report_status(ctx, job_id=first.job_id, update=done, runner_id=runner_id)
        after_done = await dependent_when(lambda c: c.message == "waiting for b to finish")
        failed = JobStatusUpdate(status=JobStatus.FAILED, exit_code=3)
        await job_service.report_status(
            ctx, job_id=second.job_id, update=failed, runner_id=runner_id
        )
        after_failure = await dependent_when(lambda c: c.status is JobStatus.FAILED)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    assert waiting == (JobStatus.PENDING, "waiting for a, b to finish")
    assert after_done == (JobStatus.PENDING, "waiting for b to finish")
    assert after_failure[0] is JobStatus.FAILED
    assert "dependency b" in (after_failure[1] or "")
