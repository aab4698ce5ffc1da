"""Bounded states: every state a job can be left in ends final, with a reason, within a
deadline (issue #14, "Bounded states"), on SQLite and PostgreSQL, with a clock the tests move.

The scheduler is driven as in a server: it wakes every few seconds, and runners that are
alive heartbeat in between (`_Fleet.wait`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.server.conftest import (
    FakeClock,
    anyio_backend,
    clock,
    ctx,
    db_url,
    host,
    job,
    postgres,
    register,
    submission,
)

from dstack.models.job import Job, JobStatus, TerminationReason
from dstack.models.protocol import HeartbeatRequest, JobAssignment, JobStatusUpdate
from dstack.server.app import running_context
from dstack.server.context import ServerContext
from dstack.server.errors import Forbidden
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

__all__ = ["anyio_backend", "clock", "ctx", "db_url", "postgres"]  # fixtures
pytestmark = pytest.mark.anyio

PROVISIONING, DOWNLOADING, UPLOADING = 30.0, 60.0, 45.0
STEP = 5.0  # the scheduler's and the runners' pace: well inside the heartbeat timeout


@pytest.fixture
def settings(tmp_path: Path, db_url: str | None) -> ServerSettings:
    """The server tests' settings (`tests/server/conftest.py`), with short deadlines."""
    return ServerSettings(
        home=tmp_path / "home",
        token="secret-token",
        user="alice",
        runner_token="runner-token",
        database_url=db_url,
        provisioning_timeout=PROVISIONING,
        downloading_timeout=DOWNLOADING,
        uploading_timeout=UPLOADING,
    )


class _Fleet:
    """The scheduler and the runners that are alive, moved through time together."""

    def __init__(self, ctx: ServerContext, clock: FakeClock) -> None:
        self.ctx, self.clock = ctx, clock
        self.scheduler = Scheduler(ctx)
        self.alive: dict[str, list[str]] = {}  # runner id → the jobs it says it runs

    async def runner(self, name: str, cpus: int = 2) -> str:
        runner_id = await register(self.ctx, name, host(cpus=cpus))
        self.alive[runner_id] = []
        return runner_id

    async def wait(self, seconds: float) -> None:
        """`seconds` pass: live runners heartbeat and the scheduler ticks every `STEP`."""
        left = seconds
        while left > 0:
            step = min(STEP, left)
            self.clock.advance(step)
            left -= step
            for runner_id, running in self.alive.items():
                request = HeartbeatRequest(running_jobs=running)
                await runner_service.heartbeat(self.ctx, runner_id=runner_id, request=request)
            await self.scheduler.tick()

    async def claim(self, runner_id: str) -> JobAssignment:
        assignment = await claims.try_claim(self.ctx, runner_id=runner_id)
        assert assignment is not None
        return assignment

    async def report(self, runner_id: str, job_id: str, *statuses: JobStatus) -> None:
        for status in statuses:
            update = JobStatusUpdate(status=status, exit_code=0 if status.is_finished() else None)
            await job_service.report_status(
                self.ctx, job_id=job_id, update=update, runner_id=runner_id
            )

    async def job(self, run_name: str, index: int = 0) -> Job:
        return (await runs.get_run(self.ctx, name=run_name)).jobs[index]


@pytest.fixture
async def fleet(ctx: ServerContext, clock: FakeClock) -> _Fleet:
    return _Fleet(ctx, clock)


# The reports that bring a claimed job to each state, and the state's limit.
_TO_STATE = {
    JobStatus.DOWNLOADING: ((JobStatus.DOWNLOADING,), DOWNLOADING),
    JobStatus.UPLOADING: ((JobStatus.RUNNING, JobStatus.UPLOADING), UPLOADING),
}


@pytest.mark.parametrize("state", list(_TO_STATE))
async def test_a_job_stuck_in_a_state_past_its_deadline_fails_naming_state_and_limit(
    fleet: _Fleet, state: JobStatus
) -> None:
    reports, limit = _TO_STATE[state]
    runner_id = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job()))
    assignment = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [assignment.job_id]  # alive, holding the job, never moving it on
    await fleet.report(runner_id, assignment.job_id, *reports)

    await fleet.wait(limit - 1)
    assert (await fleet.job(run.name)).status is state

    await fleet.wait(STEP)
    ended = await fleet.job(run.name)
    assert (ended.status, ended.reason) == (JobStatus.FAILED, TerminationReason.DEADLINE_EXCEEDED)
    assert ended.message == (
        f"{state.value} for more than {limit:g} s on runner 'r1' "
        f"(the server's --{state.value}-timeout)"
    )
    assert (await runs.get_run(fleet.ctx, name=run.name)).status is JobStatus.FAILED
    # The runner is told to drop the job; its late reports are refused.
    answer = await runner_service.heartbeat(
        fleet.ctx, runner_id=runner_id, request=HeartbeatRequest(running_jobs=[assignment.job_id])
    )
    assert answer.forget_jobs == [assignment.job_id]
    with pytest.raises(Forbidden, match="already failed"):
        await fleet.report(runner_id, assignment.job_id, JobStatus.DONE)


async def test_a_claim_never_confirmed_is_requeued_once_then_lost(fleet: _Fleet) -> None:
    first = await fleet.runner("r1")
    second = await fleet.runner("r2")
    run = await runs.submit_run(fleet.ctx, request=submission(job(cpu=2)))
    lost = await fleet.claim(first)  # the claim's answer never reaches r1

    await fleet.wait(PROVISIONING - 1)
    assert (await fleet.job(run.name)).status is JobStatus.PROVISIONING

    await fleet.wait(STEP)
    requeued = await fleet.job(run.name)
    assert requeued.status in (JobStatus.SUBMITTED, JobStatus.PENDING)
    assert requeued.runner_id is None
    [back] = [c for c in requeued.history if c.status is JobStatus.SUBMITTED][1:]
    assert back.reason is TerminationReason.DEADLINE_EXCEEDED
    assert back.message == (
        f"provisioning for more than {PROVISIONING:g} s: runner 'r1' never confirmed the claim;"
        " re-queued"
    )
    assert requeued.attempt == 0  # the job never started: its `retry` is untouched

    # r1 hears of it only now: it is told to forget the job, and cannot report on it.
    answer = await runner_service.heartbeat(
        fleet.ctx, runner_id=first, request=HeartbeatRequest(running_jobs=[lost.job_id])
    )
    assert answer.forget_jobs == [lost.job_id]
    with pytest.raises(Forbidden, match="not held by this runner"):
        await fleet.report(first, lost.job_id, JobStatus.RUNNING)

    # The second claim is not confirmed either: no third chance.
    again = await fleet.claim(second)
    assert again.job_id == lost.job_id
    await fleet.wait(PROVISIONING + STEP)
    failed = await fleet.job(run.name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)
    assert failed.message == (
        f"provisioning for more than {PROVISIONING:g} s: runner 'r2' never confirmed the claim,"
        " after a re-queue for the same"
    )
    assert [c.status for c in failed.history].count(JobStatus.PROVISIONING) == 2


async def test_a_requeued_claim_confirmed_by_another_runner_runs_to_done(fleet: _Fleet) -> None:
    first = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job()))
    await fleet.claim(first)
    await fleet.wait(PROVISIONING + STEP)
    del fleet.alive[first]  # r1 goes away; r2 comes

    second = await fleet.runner("r2")
    assignment = await fleet.claim(second)
    fleet.alive[second] = [assignment.job_id]
    await fleet.report(second, assignment.job_id, JobStatus.DOWNLOADING)
    await fleet.wait(PROVISIONING + STEP)  # a confirmed claim is past provisioning's limit
    await fleet.report(second, assignment.job_id, JobStatus.RUNNING, JobStatus.DONE)

    done = await fleet.job(run.name)
    assert (done.status, done.reason) == (JobStatus.DONE, TerminationReason.DONE)
    assert (await runs.get_run(fleet.ctx, name=run.name)).status is JobStatus.DONE


async def test_a_stopped_job_whose_claim_is_never_confirmed_ends_stopped(fleet: _Fleet) -> None:
    runner_id = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job()))
    await fleet.claim(runner_id)
    await runs.stop_run(fleet.ctx, name=run.name)

    await fleet.wait(PROVISIONING + STEP)

    stopped = await fleet.job(run.name)
    assert (stopped.status, stopped.reason) == (
        JobStatus.STOPPED,
        TerminationReason.STOPPED_BY_USER,
    )
    assert "never confirmed the claim" in (stopped.message or "")


async def test_heartbeats_keep_a_long_running_job_alive(fleet: _Fleet) -> None:
    runner_id = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job()))
    assignment = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [assignment.job_id]
    await fleet.report(runner_id, assignment.job_id, JobStatus.DOWNLOADING, JobStatus.RUNNING)

    await fleet.wait(10 * max(PROVISIONING, DOWNLOADING, UPLOADING))

    running = await fleet.job(run.name)
    assert (running.status, running.reason) == (JobStatus.RUNNING, None)
    await fleet.report(runner_id, assignment.job_id, JobStatus.DONE)
    assert (await runs.get_run(fleet.ctx, name=run.name)).status is JobStatus.DONE


@pytest.mark.parametrize(
    "reports",
    [
        (),
        (JobStatus.DOWNLOADING,),
        (JobStatus.RUNNING,),
        (JobStatus.RUNNING, JobStatus.UPLOADING),
    ],
    ids=["provisioning", "downloading", "running", "uploading"],
)
async def test_a_silent_runner_loses_its_job_in_every_state(
    fleet: _Fleet, reports: tuple[JobStatus, ...]
) -> None:
    keeper = await fleet.runner("keeper")  # another runner, alive throughout
    silent = await fleet.runner("silent")
    run = await runs.submit_run(fleet.ctx, request=submission(job()))
    assignment = await fleet.claim(silent)
    await fleet.report(silent, assignment.job_id, *reports)
    del fleet.alive[silent]

    await fleet.wait(fleet.ctx.settings.runner_heartbeat_timeout + STEP)

    lost = await fleet.job(run.name)
    assert (lost.status, lost.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)
    assert lost.message == "runner 'silent' stopped sending heartbeats"
    states = {r.name: r.status.value for r in await runner_service.list_runners(fleet.ctx)}
    assert states == {"keeper": "ready", "silent": "offline"}
    assert keeper in fleet.alive


async def test_a_stalled_server_blames_no_runner_and_restarts_its_deadlines(
    fleet: _Fleet,
) -> None:
    runner_id = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job(), job(name="eval")))
    assignment = await fleet.claim(runner_id)
    other = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [assignment.job_id, other.job_id]
    await fleet.report(runner_id, assignment.job_id, JobStatus.RUNNING)
    await fleet.report(runner_id, other.job_id, JobStatus.RUNNING, JobStatus.UPLOADING)
    await fleet.wait(STEP)

    # The machine sleeps: neither the server nor the runner runs for longer than every limit.
    fleet.clock.advance(10 * UPLOADING)
    await fleet.scheduler.tick()  # the server wakes first
    assert [j.status for j in (await runs.get_run(fleet.ctx, name=run.name)).jobs] == [
        JobStatus.RUNNING,
        JobStatus.UPLOADING,
    ]

    # The runner heartbeats again: nothing was lost. The upload's deadline counts afresh.
    await fleet.wait(UPLOADING - STEP)
    assert (await fleet.job(run.name, 1)).status is JobStatus.UPLOADING
    await fleet.wait(2 * STEP)
    stuck = await fleet.job(run.name, 1)
    assert (stuck.status, stuck.reason) == (JobStatus.FAILED, TerminationReason.DEADLINE_EXCEEDED)
    assert (await fleet.job(run.name, 0)).status is JobStatus.RUNNING


async def test_a_server_restarted_after_a_long_stop_gives_runners_their_time(
    settings: ServerSettings, clock: FakeClock
) -> None:
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False
    ) as first:
        fleet = _Fleet(first, clock)
        runner_id = await fleet.runner("r1")
        run = await runs.submit_run(first, request=submission(job()))
        assignment = await fleet.claim(runner_id)
        await fleet.report(runner_id, assignment.job_id, JobStatus.DOWNLOADING)

    clock.advance(10 * DOWNLOADING)  # the server is down; the runner waits for it
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False
    ) as second:
        fleet = _Fleet(second, clock)
        await fleet.scheduler.tick()
        assert (await fleet.job(run.name)).status is JobStatus.DOWNLOADING
        fleet.alive[runner_id] = [assignment.job_id]  # the runner is back
        await fleet.wait(DOWNLOADING - STEP)
        assert (await fleet.job(run.name)).status is JobStatus.DOWNLOADING
        await fleet.report(runner_id, assignment.job_id, JobStatus.RUNNING, JobStatus.DONE)
        assert (await fleet.job(run.name)).status is JobStatus.DONE


async def test_a_run_whose_jobs_all_ended_is_final(fleet: _Fleet) -> None:
    """A job that times out fails the jobs waiting for it; the run never stays `running`."""
    runner_id = await fleet.runner("r1", cpus=4)
    request = submission(
        job(name="prep"), job(name="side"), job(name="train", deps=[0]), job(name="eval", deps=[2])
    )
    run = await runs.submit_run(fleet.ctx, request=request)
    await fleet.scheduler.tick()
    prep = await fleet.claim(runner_id)
    side = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [prep.job_id, side.job_id]
    await fleet.report(runner_id, prep.job_id, JobStatus.RUNNING, JobStatus.UPLOADING)
    await fleet.report(runner_id, side.job_id, JobStatus.RUNNING)

    await fleet.wait(UPLOADING + STEP)
    assert (await runs.get_run(fleet.ctx, name=run.name)).status is JobStatus.RUNNING
    fleet.alive[runner_id] = [side.job_id]
    await fleet.report(runner_id, side.job_id, JobStatus.DONE)
    await fleet.wait(STEP)

    final = await runs.get_run(fleet.ctx, name=run.name)
    assert [(j.status, j.reason) for j in final.jobs] == [
        (JobStatus.FAILED, TerminationReason.DEADLINE_EXCEEDED),
        (JobStatus.DONE, TerminationReason.DONE),
        (JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED),
        (JobStatus.FAILED, TerminationReason.DEPENDENCY_FAILED),
    ]
    assert final.status is JobStatus.FAILED
    listed = {r.name: r.status for r in await runs.list_runs(fleet.ctx, all=True)}
    assert listed[run.name] is JobStatus.FAILED


@pytest.mark.parametrize("abort", [False, True], ids=["stopped", "aborted"])
async def test_a_job_waiting_for_a_dependency_that_was_stopped_does_not_wait(
    fleet: _Fleet, abort: bool
) -> None:
    runner_id = await fleet.runner("r1")
    run = await runs.submit_run(fleet.ctx, request=submission(job(), job(name="eval", deps=[0])))
    first = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [first.job_id]
    await fleet.report(runner_id, first.job_id, JobStatus.RUNNING)
    await runs.stop_run(fleet.ctx, name=run.name, abort=abort)
    final = JobStatus.ABORTED if abort else JobStatus.STOPPED
    await fleet.report(runner_id, first.job_id, final)
    await fleet.wait(STEP)

    ended = await runs.get_run(fleet.ctx, name=run.name)
    assert [j.status for j in ended.jobs] == [final, final]
    assert ended.status is final


async def test_a_job_waiting_for_a_busy_runner_waits(fleet: _Fleet) -> None:
    runner_id = await fleet.runner("r1", cpus=2)
    busy = await runs.submit_run(fleet.ctx, request=submission(job(cpu=2)))
    fleet.clock.advance(1)
    waiting = await runs.submit_run(fleet.ctx, request=submission(job(cpu=2)))
    held = await fleet.claim(runner_id)
    fleet.alive[runner_id] = [held.job_id]
    await fleet.report(runner_id, held.job_id, JobStatus.RUNNING)

    await fleet.wait(10 * max(PROVISIONING, DOWNLOADING, UPLOADING))

    queued = await fleet.job(waiting.name)
    assert (queued.status, queued.reason) == (
        JobStatus.PENDING,
        TerminationReason.WAITING_FOR_RUNNER,
    )
    await fleet.report(runner_id, held.job_id, JobStatus.DONE)
    assert (await fleet.claim(runner_id)).job_id == queued.id
    assert (await fleet.job(busy.name)).status is JobStatus.DONE


async def test_a_job_no_runner_can_ever_take_fails_at_once_with_the_nearest_offers(
    fleet: _Fleet,
) -> None:
    await fleet.runner("small", cpus=2)
    await fleet.runner("big", cpus=8)
    run = await runs.submit_run(fleet.ctx, request=submission(job(cpu=16)))

    await fleet.scheduler.tick()

    failed = await fleet.job(run.name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.NO_CAPACITY)
    assert failed.message == "asked for 16 CPU; runners: big (8 CPU, 24 GiB); small (2 CPU, 24 GiB)"
