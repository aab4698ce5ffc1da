from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from dstack.errors import ConflictError
from dstack.models.job import JobStatus
from dstack.models.protocol import JobAssignment, JobStatusUpdate
from dstack.server.context import ServerContext
from dstack.server.errors import Forbidden
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service

from .conftest import host, job, register, submission

pytestmark = pytest.mark.anyio


async def test_concurrent_claims_never_get_the_same_job(ctx: ServerContext) -> None:
    runner_ids = [await register(ctx, f"r{i}", host(cpus=4)) for i in range(6)]
    await runs.submit_run(ctx, request=submission(*[job() for _ in range(10)]))

    results = await asyncio.gather(
        *[claims.try_claim(ctx, runner_id=r) for r in runner_ids for _ in range(4)]
    )

    job_ids = [a.job_id for a in results if a is not None]
    assert len(job_ids) == 10
    assert len(set(job_ids)) == 10


async def test_a_stale_status_change_is_refused(ctx: ServerContext) -> None:
    """Two claimers that read the same job: the second's guarded update changes nothing."""
    from sqlalchemy import select

    from dstack.server.db.models import JobRow

    await runs.submit_run(ctx, request=submission(job()))
    async with ctx.transaction() as session:
        first = (await session.scalars(select(JobRow))).one()
    async with ctx.transaction() as session:
        second = (await session.scalars(select(JobRow))).one()
    async with ctx.transaction() as session:
        assert await job_service.set_status(
            session, first, JobStatus.PROVISIONING, now=ctx.clock(), runner_id="a"
        )
    async with ctx.transaction() as session:
        assert not await job_service.set_status(
            session, second, JobStatus.PROVISIONING, now=ctx.clock(), runner_id="b"
        )
    async with ctx.transaction() as session:
        assert (await session.scalars(select(JobRow.runner_id))).one() == "a"


async def test_gpus_are_shared_by_index_between_jobs(ctx: ServerContext) -> None:
    runner_id = await register(ctx, "gpu-box", host(cpus=8, gpus=[("A100", 40960)] * 4))
    await runs.submit_run(ctx, request=submission(job(gpus=2), job(gpus=2), job(gpus=1)))

    first = await claims.try_claim(ctx, runner_id=runner_id)
    second = await claims.try_claim(ctx, runner_id=runner_id)
    third = await claims.try_claim(ctx, runner_id=runner_id)

    assert first is not None
    assert second is not None
    assert (first.gpu_indexes, second.gpu_indexes) == ([0, 1], [2, 3])
    assert third is None
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=first.job_id, update=done, runner_id=runner_id)
    third = await claims.try_claim(ctx, runner_id=runner_id)
    assert third is not None
    assert third.gpu_indexes == [0]


async def test_cpu_slots_limit_parallel_jobs(ctx: ServerContext) -> None:
    runner_id = await register(ctx, "small", host(cpus=2))
    await runs.submit_run(ctx, request=submission(job(), job(), job()))

    got = [await claims.try_claim(ctx, runner_id=runner_id) for _ in range(3)]

    assert [a is not None for a in got] == [True, True, False]


async def test_a_final_status_asking_for_the_next_job_claims_it_in_its_answer(
    ctx: ServerContext,
) -> None:
    runner_id = await register(ctx, "small", host(cpus=2))
    await runs.submit_run(ctx, request=submission(job(), job(), job(), job(cpu=2)))
    first = await claims.try_claim(ctx, runner_id=runner_id)
    second = await claims.try_claim(ctx, runner_id=runner_id)
    assert first is not None
    assert second is not None
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0, next_job=True)

    third = await claims.report_status(ctx, job_id=first.job_id, update=done, runner_id=runner_id)

    assert third is not None
    assert third.job_id not in (first.job_id, second.job_id)
    # The two-CPU job waits for both slots: a final status frees one, its answer is empty.
    assert (
        await claims.report_status(ctx, job_id=second.job_id, update=done, runner_id=runner_id)
        is None
    )
    assert await claims.try_claim(ctx, runner_id=runner_id) is None
    plain = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)  # an older runner's
    assert (
        await claims.report_status(ctx, job_id=third.job_id, update=plain, runner_id=runner_id)
        is None
    )
    fourth = await claims.try_claim(ctx, runner_id=runner_id)
    assert fourth is not None
    assert fourth.spec.resources.cpu == 2


async def test_final_statuses_asking_for_next_jobs_at_once_hand_each_job_out_once(
    ctx: ServerContext,
) -> None:
    """Each report and the claim answering it are one transaction: runners ending jobs at
    the same moment each get another job, never the same one, and every report stands."""
    runner_ids = [await register(ctx, f"r{i}", host(cpus=1)) for i in range(4)]
    await runs.submit_run(ctx, request=submission(*[job() for _ in range(10)]))
    first = [await claims.try_claim(ctx, runner_id=r) for r in runner_ids]
    assert all(a is not None for a in first)
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0, next_job=True)

    async def finish(assignment: JobAssignment | None, runner_id: str) -> JobAssignment | None:
        assert assignment is not None
        return await claims.report_status(
            ctx, job_id=assignment.job_id, update=done, runner_id=runner_id
        )

    second = await asyncio.gather(*[finish(a, r) for a, r in zip(first, runner_ids, strict=True)])
    third = await asyncio.gather(*[finish(a, r) for a, r in zip(second, runner_ids, strict=True)])

    handed = [a.job_id for a in [*first, *second, *third] if a is not None]
    assert len(handed) == len(set(handed)) == 10
    assert [a is None for a in third].count(True) == 2  # 10 jobs: the queue ran dry
    shown = (await runs.list_runs(ctx))[0]
    statuses = sorted(j.status.value for j in shown.jobs)
    assert statuses == ["done"] * 8 + ["provisioning"] * 2


async def test_a_refused_final_status_hands_out_no_job(ctx: ServerContext) -> None:
    """A final status that is not the runner's to send is refused whole: the job it asked
    for stays in the queue for the next claim."""
    holder = await register(ctx, "holder", host(cpus=1))
    other = await register(ctx, "other", host(cpus=1))
    await runs.submit_run(ctx, request=submission(job(), job()))
    held = await claims.try_claim(ctx, runner_id=holder)
    assert held is not None
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0, next_job=True)

    with pytest.raises(Forbidden):
        await claims.report_status(ctx, job_id=held.job_id, update=done, runner_id=other)

    waiting = await claims.try_claim(ctx, runner_id=other)
    assert waiting is not None
    assert waiting.job_id != held.job_id
    async with ctx.read() as session:
        row = await job_service.require_job(session, held.job_id)
    assert row.status == JobStatus.PROVISIONING.value


async def test_a_final_status_needs_no_running_before_it_and_a_late_running_changes_nothing(
    ctx: ServerContext,
) -> None:
    """A job over before its `running` report was answered: the runner posts its final
    status at once, on another connection; `running`, arriving after it, is refused."""
    runner_id = await register(ctx, "box", host(cpus=2))
    await runs.submit_run(ctx, request=submission(job()))
    claimed = await claims.try_claim(ctx, runner_id=runner_id)
    assert claimed is not None
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0, next_job=True)
    running = JobStatusUpdate(status=JobStatus.RUNNING, host_ports=[])

    assert (
        await claims.report_status(ctx, job_id=claimed.job_id, update=done, runner_id=runner_id)
        is None
    )
    with pytest.raises(Forbidden):
        await claims.report_status(ctx, job_id=claimed.job_id, update=running, runner_id=runner_id)

    async with ctx.read() as session:
        row = await job_service.require_job(session, claimed.job_id)
    assert row.status == JobStatus.DONE.value
    assert [entry["status"] for entry in row.history] == ["submitted", "provisioning", "done"]


async def test_a_final_status_crossing_a_running_report_ends_the_job(ctx: ServerContext) -> None:
    """Both at once, as a runner sends them when its job ends while `running` is in flight:
    `running` may apply first or be refused; a final status that met it (409) is posted
    again, as the runner does, and the job ends done either way."""
    runner_id = await register(ctx, "box", host(cpus=2))
    await runs.submit_run(ctx, request=submission(job()))
    claimed = await claims.try_claim(ctx, runner_id=runner_id)
    assert claimed is not None
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    running = JobStatusUpdate(status=JobStatus.RUNNING, host_ports=[])

    def report(update: JobStatusUpdate) -> Awaitable[JobAssignment | None]:
        return claims.report_status(ctx, job_id=claimed.job_id, update=update, runner_id=runner_id)

    late, final = await asyncio.gather(report(running), report(done), return_exceptions=True)
    if isinstance(final, ConflictError):
        final = await report(done)

    assert final is None
    assert late is None or isinstance(late, (Forbidden, ConflictError))
    async with ctx.read() as session:
        row = await job_service.require_job(session, claimed.job_id)
    assert row.status == JobStatus.DONE.value
    assert row.exit_code == 0


async def test_claim_long_poll_wakes_on_submit(ctx: ServerContext) -> None:
    runner_id = await register(ctx)
    waiting = asyncio.create_task(claims.claim(ctx, runner_id=runner_id, wait_seconds=30))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    run = await runs.submit_run(ctx, request=submission(job()))
    assignment = await asyncio.wait_for(waiting, timeout=10)

    assert assignment is not None
    assert assignment.run_name == run.name
    assert assignment.repo.repo_id == "github.com/acme/models"


async def test_a_claim_whose_runner_is_gone_takes_no_job(ctx: ServerContext) -> None:
    # A runner killed while its claim waits: the job must stay for a live one.
    runner_id = await register(ctx)
    gone = False

    async def is_gone() -> bool:
        return gone

    waiting = asyncio.create_task(
        claims.claim(ctx, runner_id=runner_id, wait_seconds=30, gone=is_gone)
    )
    await asyncio.sleep(0.1)
    gone = True
    await runs.submit_run(ctx, request=submission(job()))

    assert await asyncio.wait_for(waiting, timeout=10) is None
    assert await claims.try_claim(ctx, runner_id=runner_id) is not None


async def test_a_draining_server_answers_waiting_claims_and_hands_out_no_job(
    ctx: ServerContext,
) -> None:
    # The server was asked to exit: a claim waiting for work answers now (the graceful
    # shutdown would otherwise wait for it, then cancel it), and no job leaves with it.
    runner_id = await register(ctx)
    waiting = asyncio.create_task(claims.claim(ctx, runner_id=runner_id, wait_seconds=60))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    ctx.drain()
    await runs.submit_run(ctx, request=submission(job()))

    assert await asyncio.wait_for(waiting, timeout=10) is None
    assert await claims.claim(ctx, runner_id=runner_id, wait_seconds=60) is None
    [run] = await runs.list_runs(ctx, all=True)
    assert [j.status for j in run.jobs] == [JobStatus.SUBMITTED]


async def test_claim_returns_none_after_wait(ctx: ServerContext) -> None:
    runner_id = await register(ctx)

    assert await claims.claim(ctx, runner_id=runner_id, wait_seconds=0.2) is None


async def test_dependencies_are_claimed_in_order(ctx: ServerContext) -> None:
    runner_id = await register(ctx, "big", host(cpus=8))
    await runs.submit_run(ctx, request=submission(job(name="prep"), job(name="train", deps=[0])))

    first = await claims.try_claim(ctx, runner_id=runner_id)
    assert first is not None
    assert first.job_index == 0
    assert await claims.try_claim(ctx, runner_id=runner_id) is None

    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=first.job_id, update=done, runner_id=runner_id)
    second = await claims.try_claim(ctx, runner_id=runner_id)
    assert second is not None
    assert second.job_index == 1


async def test_a_claim_finds_a_fitting_job_behind_a_long_queue(ctx: ServerContext) -> None:
    """Jobs are read in batches; one that fits is found past many that do not."""
    runner_id = await register(ctx, "small", host(cpus=2))
    await runs.submit_run(ctx, request=submission(*[job(cpu=8) for _ in range(70)]))
    fitting = await runs.submit_run(ctx, request=submission(job(cpu=1)))

    assignment = await claims.try_claim(ctx, runner_id=runner_id)

    assert assignment is not None
    assert assignment.run_name == fitting.name
