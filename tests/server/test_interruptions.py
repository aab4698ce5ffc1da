"""The server's side of spot interruptions: which interrupted jobs are re-queued, what the
next attempt gets back (its synced artifacts), and what happens to the log lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dstack.models.job import (
    DEFAULT_INTERRUPTIBLE_RETRY,
    Job,
    JobSpec,
    JobStatus,
    TerminationReason,
    job_attempts,
    retry_limit,
)
from dstack.models.logs import LogStream
from dstack.models.protocol import JobAssignment, JobStatusUpdate, JobSubmission, LogBatch, LogLine
from dstack.models.resources import ResourcesSpec
from dstack.models.workflow import ArtifactSpec
from dstack.server.context import ServerContext
from dstack.server.errors import Forbidden
from dstack.server.services import artifacts, claims, logs, runs
from dstack.server.services import jobs as job_service
from dstack.server.services.caching import spec_fingerprint

from .conftest import FakeClock, register, stored_manifest, submission

pytestmark = pytest.mark.anyio

INTERRUPTED = JobStatusUpdate(
    status=JobStatus.FAILED,
    reason=TerminationReason.INTERRUPTED,
    message="spot instance interrupted: terminate at 2023-03-01 12:02:00 UTC",
    exit_code=143,
)


def spot_job(*, interruptible: bool = True, retry: int | None = None) -> JobSubmission:
    spec = JobSpec(
        provider="bash",
        workflow_name="train",
        commands=["python train.py"],
        artifacts=[ArtifactSpec(path="ckpt")],
        resources=ResourcesSpec(interruptible=interruptible),
        retry=retry,
    )
    return JobSubmission(workflow_name="train", spec=spec)


async def _claim(ctx: ServerContext, runner_id: str) -> JobAssignment:
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    await job_service.report_status(
        ctx,
        job_id=assignment.job_id,
        update=JobStatusUpdate(status=JobStatus.RUNNING),
        runner_id=runner_id,
    )
    return assignment


async def _interrupt(ctx: ServerContext, job_id: str, runner_id: str) -> None:
    await job_service.report_status(ctx, job_id=job_id, update=INTERRUPTED, runner_id=runner_id)


async def _job(ctx: ServerContext, run_name: str) -> Job:
    return (await runs.get_run(ctx, name=run_name)).jobs[0]


async def _log(ctx: ServerContext, job_id: str, runner_id: str, *texts: str) -> None:
    at = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)
    lines = [
        LogLine(seq=i, timestamp=at, stream=LogStream.STDOUT, data=f"{text}\n")
        for i, text in enumerate(texts)
    ]
    await logs.append_logs(ctx, job_id=job_id, batch=LogBatch(lines=lines), runner_id=runner_id)


async def test_an_interrupted_spot_job_resumes_on_another_runner_with_its_artifacts_and_logs(
    ctx: ServerContext, clock: FakeClock
) -> None:
    first = await register(ctx, "spot-1")
    run = await runs.submit_run(ctx, request=submission(spot_job()))
    assignment = await _claim(ctx, first)
    assert assignment.resume == []
    checkpoint = stored_manifest(ctx.blobs, "ckpt", b"epoch 2")
    await artifacts.save_manifest(
        ctx, job_id=assignment.job_id, manifest=checkpoint, runner_id=first
    )
    await _log(ctx, assignment.job_id, first, "epoch 1", "epoch 2")
    clock.advance(5)
    await _interrupt(ctx, assignment.job_id, first)

    requeued = await _job(ctx, run.name)
    assert (requeued.status, requeued.reason) == (
        JobStatus.SUBMITTED,
        TerminationReason.INTERRUPTED,
    )
    assert requeued.message == f"{INTERRUPTED.message}; re-queued (attempt 2 of 4)"
    assert requeued.attempt == 1
    assert requeued.runner_id is None

    second = await register(ctx, "spot-2")
    again = await _claim(ctx, second)
    assert again.job_id == assignment.job_id
    assert again.resume == [checkpoint]
    await _log(ctx, again.job_id, second, "resumed at epoch 2", "epoch 3")
    await job_service.report_status(
        ctx, job_id=again.job_id, update=JobStatusUpdate(status=JobStatus.DONE), runner_id=second
    )

    page = await logs.get_logs(ctx, run_name=run.name)
    assert [e.data for e in page.events] == [
        "epoch 1\n",
        "epoch 2\n",
        f"--- attempt 1 ended: {requeued.message} ---\n",
        "resumed at epoch 2\n",
        "epoch 3\n",
    ]
    assert [e.seq for e in page.events] == [0, 1, 2, 3, 4]
    done = await _job(ctx, run.name)
    assert done.status is JobStatus.DONE
    attempts = job_attempts(done.history)
    assert [(a.number, a.runner, a.status, a.reason) for a in attempts] == [
        (1, "spot-1", JobStatus.SUBMITTED, TerminationReason.INTERRUPTED),
        (2, "spot-2", JobStatus.DONE, TerminationReason.DONE),
    ]


async def test_the_interrupted_runners_repeated_report_is_refused(ctx: ServerContext) -> None:
    runner = await register(ctx, "spot-1")
    await runs.submit_run(ctx, request=submission(spot_job()))
    assignment = await _claim(ctx, runner)
    await _interrupt(ctx, assignment.job_id, runner)
    with pytest.raises(Forbidden):
        await _interrupt(ctx, assignment.job_id, runner)
    with pytest.raises(Forbidden):
        await _log(ctx, assignment.job_id, runner, "late line")


async def test_interruptible_jobs_retry_three_times_by_default_then_fail(
    ctx: ServerContext,
) -> None:
    run = await runs.submit_run(ctx, request=submission(spot_job()))
    for i in range(DEFAULT_INTERRUPTIBLE_RETRY):
        runner = await register(ctx, f"spot-{i}")
        assignment = await _claim(ctx, runner)
        await _interrupt(ctx, assignment.job_id, runner)
        assert (await _job(ctx, run.name)).status is JobStatus.SUBMITTED
    runner = await register(ctx, "spot-last")
    assignment = await _claim(ctx, runner)
    await _interrupt(ctx, assignment.job_id, runner)
    failed = await _job(ctx, run.name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.INTERRUPTED)
    assert failed.message == f"{INTERRUPTED.message}; no retry left (3 of 3 used)"
    assert failed.exit_code == 143
    assert len(job_attempts(failed.history)) == 4


@pytest.mark.parametrize(
    ("interruptible", "retry", "requeues"),
    [
        (True, 0, 0),  # an explicit `retry: 0` wins over the default
        (True, 1, 1),
        (False, None, 0),  # on-demand jobs: only when they ask
        (False, 2, 2),
    ],
)
async def test_the_workflows_retry_limit_counts(
    ctx: ServerContext, interruptible: bool, retry: int | None, requeues: int
) -> None:
    run = await runs.submit_run(
        ctx, request=submission(spot_job(interruptible=interruptible, retry=retry))
    )
    for i in range(requeues):
        runner = await register(ctx, f"r{i}")
        assignment = await _claim(ctx, runner)
        await _interrupt(ctx, assignment.job_id, runner)
        assert (await _job(ctx, run.name)).status is JobStatus.SUBMITTED
    runner = await register(ctx, "r-last")
    assignment = await _claim(ctx, runner)
    await _interrupt(ctx, assignment.job_id, runner)
    assert (await _job(ctx, run.name)).status is JobStatus.FAILED


async def test_a_lost_runner_and_an_interruption_share_one_limit(
    ctx: ServerContext, clock: FakeClock
) -> None:
    from dstack.server.scheduler.loop import Scheduler

    lost = await register(ctx, "lost")
    run = await runs.submit_run(ctx, request=submission(spot_job(retry=1)))
    await _claim(ctx, lost)
    clock.advance(ctx.settings.runner_heartbeat_timeout + 1)
    await Scheduler(ctx).tick()
    requeued = await _job(ctx, run.name)
    assert requeued.attempt == 1
    assert requeued.history[-2].reason is TerminationReason.RUNNER_LOST
    spot = await register(ctx, "spot")
    assignment = await _claim(ctx, spot)
    await _interrupt(ctx, assignment.job_id, spot)
    failed = await _job(ctx, run.name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.INTERRUPTED)


async def test_a_job_stopped_by_its_user_is_not_requeued_when_interrupted(
    ctx: ServerContext,
) -> None:
    runner = await register(ctx, "spot-1")
    run = await runs.submit_run(ctx, request=submission(spot_job()))
    assignment = await _claim(ctx, runner)
    await runs.stop_run(ctx, name=run.name)
    await _interrupt(ctx, assignment.job_id, runner)
    failed = await _job(ctx, run.name)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, TerminationReason.INTERRUPTED)


def test_an_unset_retry_keeps_the_cache_key_of_retry_zero() -> None:
    unset = JobSpec(provider="bash", commands=["x"])
    zero = JobSpec(provider="bash", commands=["x"], retry=0)
    assert spec_fingerprint(unset) == spec_fingerprint(zero)
    spot = unset.model_copy(update={"resources": ResourcesSpec(interruptible=True)})
    assert retry_limit(spot, TerminationReason.INTERRUPTED) == DEFAULT_INTERRUPTIBLE_RETRY
    assert retry_limit(spot, TerminationReason.RUNNER_LOST) == 0
    assert retry_limit(zero, TerminationReason.INTERRUPTED) == 0
