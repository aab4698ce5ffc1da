"""`apps_ready` reports: the runner's probe stamps `apps_ready_at` through the status door."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dstack.models.job import Job, JobStatus
from dstack.models.protocol import JobStatusUpdate
from dstack.server.context import ServerContext
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service

from .conftest import FakeClock, register, submission

pytestmark = pytest.mark.anyio


async def _running_job(ctx: ServerContext) -> tuple[str, str, str]:
    """A run with one job, claimed and reported running: (run name, job id, runner id)."""
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission())
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    await _report(ctx, assignment.job_id, runner_id, JobStatusUpdate(status=JobStatus.RUNNING))
    return run.name, assignment.job_id, runner_id


async def _report(ctx: ServerContext, job_id: str, runner_id: str, update: JobStatusUpdate) -> None:
    await job_service.report_status(ctx, job_id=job_id, update=update, runner_id=runner_id)


async def _job(ctx: ServerContext, run_name: str) -> Job:
    return (await runs.get_run(ctx, name=run_name)).jobs[0]


READY = JobStatusUpdate(status=JobStatus.RUNNING, apps_ready=True)


async def test_a_running_job_gets_apps_ready_at_without_a_new_status(
    ctx: ServerContext, clock: FakeClock
) -> None:
    run_name, job_id, runner_id = await _running_job(ctx)
    before = await _job(ctx, run_name)
    assert before.apps_ready_at is None

    clock.advance(5)
    await _report(ctx, job_id, runner_id, READY)
    clock.advance(5)
    await _report(ctx, job_id, runner_id, READY)  # a repeated report keeps the first time

    after = await _job(ctx, run_name)
    assert after.apps_ready_at == clock() - timedelta(seconds=5)
    assert after.status is JobStatus.RUNNING
    assert after.history == before.history


async def test_a_late_report_does_not_move_the_job_back_to_running(ctx: ServerContext) -> None:
    run_name, job_id, runner_id = await _running_job(ctx)
    await _report(ctx, job_id, runner_id, JobStatusUpdate(status=JobStatus.UPLOADING))

    await _report(ctx, job_id, runner_id, READY)

    job = await _job(ctx, run_name)
    assert job.status is JobStatus.UPLOADING
    assert job.apps_ready_at is None
