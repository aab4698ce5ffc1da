"""Gang scheduling of multi-node jobs: all nodes start together on distinct runners, or none
holds a runner; a node that fails stops the others."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dstack.errors import DstackError
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.protocol import (
    HeartbeatRequest,
    JobAssignment,
    JobStatusUpdate,
    JobSubmission,
    RegisterRunnerRequest,
)
from dstack.models.resources import ResourcesSpec
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import claims, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service

from .conftest import FakeClock, host, job, submission

pytestmark = pytest.mark.anyio


def gang(nodes: int, name: str = "train") -> list[JobSubmission]:
    """The jobs `dstack run` plans for `nodes: N`: one per node, next to each other."""
    resources = ResourcesSpec(cpu=1, nodes=nodes)
    return [
        JobSubmission(
            workflow_name=name,
            spec=JobSpec(
                provider="bash",
                commands=["echo hi"],
                resources=resources,
                workflow_name=name,
                node_rank=rank,
            ),
        )
        for rank in range(nodes)
    ]


async def add_runner(ctx: ServerContext, name: str, address: str | None = None) -> str:
    """A runner with one CPU: one job at a time."""
    request = RegisterRunnerRequest(
        name=name,
        host=f"{name}.local",
        address=address,
        resources=host(cpus=1),
        executors=["process"],
    )
    answer = await runner_service.register(ctx, runner_id=None, request=request)
    return answer.runner_id


async def report(ctx: ServerContext, a: JobAssignment, runner: str, *updates: JobStatus) -> None:
    for status in updates:
        update = JobStatusUpdate(status=status, exit_code=0 if status is JobStatus.DONE else None)
        await job_service.report_status(ctx, job_id=a.job_id, update=update, runner_id=runner)


async def finish(ctx: ServerContext, a: JobAssignment, runner: str) -> None:
    await report(ctx, a, runner, JobStatus.RUNNING, JobStatus.DONE)


async def jobs_of(ctx: ServerContext, run: str) -> list[JobRow]:
    async with ctx.read() as session:
        query = select(JobRow).where(JobRow.run_name == run).order_by(JobRow.index)
        return list((await session.scalars(query)).all())


async def test_a_gang_and_a_single_job_share_two_runners_without_deadlock(
    ctx: ServerContext, clock: FakeClock
) -> None:
    r1 = await add_runner(ctx, "r1", "10.0.0.1")
    r2 = await add_runner(ctx, "r2", "10.0.0.2")
    single = await runs.submit_run(ctx, request=submission(job(cpu=1)))
    clock.advance(1)
    pair = await runs.submit_run(ctx, request=submission(*gang(2)))

    first = await claims.try_claim(ctx, runner_id=r1)
    assert first is not None
    assert first.run_name == single.name
    # One runner free, the gang needs two: r2 gets nothing, and nothing is held for it.
    assert await claims.try_claim(ctx, runner_id=r2) is None
    assert all(j.runner_id is None for j in await jobs_of(ctx, pair.name))

    await finish(ctx, first, r1)
    primary = await claims.try_claim(ctx, runner_id=r1)
    node1 = await claims.try_claim(ctx, runner_id=r2)
    assert primary is not None
    assert node1 is not None
    assert (primary.run_name, node1.run_name) == (pair.name, pair.name)
    assert primary.node is not None
    assert node1.node is not None
    assert (primary.node.rank, node1.node.rank) == (0, 1)
    assert node1.node.master_address == "10.0.0.1"
    assert node1.node.master_job_id == primary.job_id
    assert node1.node.nodes == 2
    assert node1.node.master_port == primary.node.master_port  # one port per gang
    assert 29500 <= node1.node.master_port < 30500

    await finish(ctx, primary, r1)
    await finish(ctx, node1, r2)
    assert (await runs.get_run(ctx, name=pair.name)).status is JobStatus.DONE
    assert (await runs.get_run(ctx, name=single.name)).status is JobStatus.DONE


async def test_two_gangs_competing_for_the_same_runners_both_finish(
    ctx: ServerContext, clock: FakeClock
) -> None:
    r1 = await add_runner(ctx, "r1")
    r2 = await add_runner(ctx, "r2")
    a = await runs.submit_run(ctx, request=submission(*gang(2)))
    clock.advance(1)
    b = await runs.submit_run(ctx, request=submission(*gang(2)))

    # r2 claims first: it takes a's node 0, and r1 is given a's node 1 ahead of its claim.
    got2 = await claims.try_claim(ctx, runner_id=r2)
    got1 = await claims.try_claim(ctx, runner_id=r1)
    assert got1 is not None
    assert got2 is not None
    assert {got1.run_name, got2.run_name} == {a.name}
    assert all(j.runner_id is None for j in await jobs_of(ctx, b.name))
    await finish(ctx, got1, r1)
    assert await claims.try_claim(ctx, runner_id=r1) is None  # r2 still busy: b waits whole
    await finish(ctx, got2, r2)

    got1 = await claims.try_claim(ctx, runner_id=r1)
    got2 = await claims.try_claim(ctx, runner_id=r2)
    assert got1 is not None
    assert got2 is not None
    assert {got1.run_name, got2.run_name} == {b.name}
    await finish(ctx, got1, r1)
    await finish(ctx, got2, r2)
    for run in (a, b):
        assert (await runs.get_run(ctx, name=run.name)).status is JobStatus.DONE


async def test_a_gang_larger_than_the_fleet_waits_then_starts_with_a_new_runner(
    ctx: ServerContext,
) -> None:
    r1 = await add_runner(ctx, "r1")
    r2 = await add_runner(ctx, "r2")
    trio = await runs.submit_run(ctx, request=submission(*gang(3)))
    await Scheduler(ctx).tick()

    run = await runs.get_run(ctx, name=trio.name)
    assert run.status is JobStatus.PENDING
    assert {j.message for j in run.jobs} == {"needs 3 runners that fit, 2 registered"}

    # While the gang waits, a single job still runs on a free runner.
    single = await runs.submit_run(ctx, request=submission(job(cpu=1)))
    got = await claims.try_claim(ctx, runner_id=r1)
    assert got is not None
    assert got.run_name == single.name
    await finish(ctx, got, r1)

    r3 = await add_runner(ctx, "r3")
    await Scheduler(ctx).tick()
    assert {j.message for j in (await runs.get_run(ctx, name=trio.name)).jobs} == {
        "waiting for 3 runners that fit to be free at once"
    }
    taken = [await claims.try_claim(ctx, runner_id=r) for r in (r3, r1, r2)]
    assert all(t is not None for t in taken)
    assert sorted(t.node.rank for t in taken if t is not None and t.node) == [0, 1, 2]
    for t, r in zip(taken, (r3, r1, r2), strict=True):
        assert t is not None
        await finish(ctx, t, r)
    assert (await runs.get_run(ctx, name=trio.name)).status is JobStatus.DONE


async def test_a_gang_too_large_fails_once_the_grace_is_over(
    ctx: ServerContext, clock: FakeClock
) -> None:
    await add_runner(ctx, "r1")
    clock.advance(ctx.settings.no_runner_grace_seconds + 1)
    trio = await runs.submit_run(ctx, request=submission(*gang(3)))
    await Scheduler(ctx).tick()

    run = await runs.get_run(ctx, name=trio.name)
    assert run.status is JobStatus.FAILED
    assert run.jobs[0].reason is TerminationReason.NO_CAPACITY
    assert run.jobs[0].message == "needs 3 runners that fit, 1 registered"


async def test_a_gang_waiting_out_the_grace_fails_when_it_ends_with_nothing_changed(
    ctx: ServerContext, clock: FakeClock
) -> None:
    await add_runner(ctx, "r1")
    trio = await runs.submit_run(ctx, request=submission(*gang(3)))
    scheduler = Scheduler(ctx)
    await scheduler.tick()
    assert (await runs.get_run(ctx, name=trio.name)).status is JobStatus.PENDING

    clock.advance(ctx.settings.no_runner_grace_seconds + 1)  # no runner, no job changed
    await scheduler.tick()

    run = await runs.get_run(ctx, name=trio.name)
    assert run.status is JobStatus.FAILED
    assert run.jobs[0].message == "needs 3 runners that fit, 1 registered"


async def test_a_failed_node_stops_the_others_and_names_itself(ctx: ServerContext) -> None:
    r1 = await add_runner(ctx, "r1")
    r2 = await add_runner(ctx, "r2")
    pair = await runs.submit_run(ctx, request=submission(*gang(2)))
    primary = await claims.try_claim(ctx, runner_id=r1)
    node1 = await claims.try_claim(ctx, runner_id=r2)
    assert primary is not None
    assert node1 is not None
    await report(ctx, primary, r1, JobStatus.RUNNING)
    await report(ctx, node1, r2, JobStatus.RUNNING)

    failed = JobStatusUpdate(status=JobStatus.FAILED, exit_code=3)
    await job_service.report_status(ctx, job_id=node1.job_id, update=failed, runner_id=r2)
    beat = await runner_service.heartbeat(
        ctx, runner_id=r1, request=HeartbeatRequest(running_jobs=[primary.job_id])
    )
    assert beat.stop_jobs == [primary.job_id]
    await report(ctx, primary, r1, JobStatus.STOPPED)

    run = await runs.get_run(ctx, name=pair.name)
    assert run.status is JobStatus.FAILED
    assert run.jobs[0].status is JobStatus.STOPPED
    assert run.jobs[0].reason is TerminationReason.NODE_FAILED
    assert run.jobs[0].message == "node 1 failed: exit code 3"


async def test_a_reserved_node_never_taken_fails_its_gang(
    ctx: ServerContext, clock: FakeClock
) -> None:
    r1 = await add_runner(ctx, "r1")
    r2 = await add_runner(ctx, "r2")
    pair = await runs.submit_run(ctx, request=submission(*gang(2)))
    primary = await claims.try_claim(ctx, runner_id=r1)
    assert primary is not None
    await report(ctx, primary, r1, JobStatus.RUNNING)

    # Both runners stay alive; r2 just never claims the node given to it.
    scheduler = Scheduler(ctx)
    for _ in range(int(ctx.settings.provisioning_timeout // 10) + 1):
        clock.advance(10)
        for runner, held in ((r1, [primary.job_id]), (r2, [])):
            beat = HeartbeatRequest(running_jobs=held)
            await runner_service.heartbeat(ctx, runner_id=runner, request=beat)
        await scheduler.tick()

    rows = await jobs_of(ctx, pair.name)
    assert rows[1].status == JobStatus.FAILED.value
    assert rows[1].message == "runner 'r2' did not take node 1 within 300 s"
    assert rows[0].stop_requested == "stop"


async def test_a_user_stop_ends_every_node(ctx: ServerContext) -> None:
    r1 = await add_runner(ctx, "r1")
    await add_runner(ctx, "r2")
    pair = await runs.submit_run(ctx, request=submission(*gang(2)))
    assert await claims.try_claim(ctx, runner_id=r1) is not None  # node 1 reserved for r2

    await runs.stop_run(ctx, name=pair.name)

    rows = await jobs_of(ctx, pair.name)
    assert rows[0].stop_requested == "stop"
    assert rows[1].status == JobStatus.STOPPED.value
    assert rows[1].reason == TerminationReason.STOPPED_BY_USER.value


async def test_nodes_not_listed_together_are_refused(ctx: ServerContext) -> None:
    nodes = gang(2)
    with pytest.raises(DstackError, match="job 0 is node 0 of 2"):
        await runs.submit_run(ctx, request=submission(nodes[0], job(), nodes[1]))
    with pytest.raises(DstackError, match="job 0 is node 1 of 2"):
        await runs.submit_run(ctx, request=submission(nodes[1]))
