from __future__ import annotations

import re
import zlib
from collections import OrderedDict

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select, update

from dstack.errors import ConflictError, NotFoundError
from dstack.models.job import JobStatus, TerminationReason
from dstack.models.protocol import (
    HeartbeatRequest,
    ImportRunRequest,
    JobStatusUpdate,
    RegisterRunnerRequest,
)
from dstack.models.run import Run
from dstack.server.context import ServerContext
from dstack.server.db.models import InstanceRow, JobRow
from dstack.server.errors import Forbidden, InvalidRequestError
from dstack.server.services import claims, imports, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service

from .backend_twins import instance_row
from .conftest import FakeClock, host, job, register, submission

pytestmark = pytest.mark.anyio


async def test_submit_names_the_run_and_stores_jobs(ctx: ServerContext) -> None:
    run = await runs.submit_run(ctx, request=submission(job(), job(deps=[0])))

    assert re.fullmatch(r"[a-z]+-[a-z]+-1", run.name)
    assert run.user == "alice"
    assert run.status is JobStatus.SUBMITTED
    assert [(j.index, j.deps, j.status) for j in run.jobs] == [
        (0, [], JobStatus.SUBMITTED),
        (1, [0], JobStatus.SUBMITTED),
    ]


async def test_names_count_per_prefix(ctx: ServerContext) -> None:
    names = [(await runs.submit_run(ctx, request=submission())).name for _ in range(40)]

    assert len(set(names)) == 40
    by_prefix: dict[str, list[int]] = {}
    for name in names:
        prefix, _, n = name.rpartition("-")
        by_prefix.setdefault(prefix, []).append(int(n))
    assert all(ns == list(range(1, len(ns) + 1)) for ns in by_prefix.values())


async def test_deps_must_point_backwards(ctx: ServerContext) -> None:
    with pytest.raises(InvalidRequestError, match="dependency order"):
        await runs.submit_run(ctx, request=submission(job(deps=[0])))


async def test_list_shows_unfinished_and_last_finished_newest_first(
    ctx: ServerContext, clock: FakeClock
) -> None:
    ctx.settings.finished_runs_listed = 2
    names = []
    for _ in range(4):
        clock.advance(1)
        run = await runs.submit_run(ctx, request=submission())
        await runs.stop_run(ctx, name=run.name)
        names.append(run.name)
    clock.advance(1)
    active = (await runs.submit_run(ctx, request=submission())).name
    clock.advance(1)
    other = await runs.submit_run(ctx, request=submission(repo_id="other"))

    listed = [r.name for r in await runs.list_runs(ctx)]
    everything = [r.name for r in await runs.list_runs(ctx, all=True)]
    of_repo = [r.name for r in await runs.list_runs(ctx, all=True, repo_id="other")]

    assert listed == [other.name, active, names[3], names[2]]
    assert everything == [other.name, active, *reversed(names)]
    assert of_repo == [other.name]


async def test_list_finds_old_unfinished_runs_behind_many_finished_ones(
    ctx: ServerContext, clock: FakeClock
) -> None:
    ctx.settings.finished_runs_listed = 3
    old = (await runs.submit_run(ctx, request=submission())).name
    clock.advance(1)
    other_repo = (await runs.submit_run(ctx, request=submission(repo_id="other"))).name
    finished = []
    for _ in range(8):
        clock.advance(1)
        run = await runs.submit_run(ctx, request=submission())
        await runs.stop_run(ctx, name=run.name)
        finished.append(run.name)

    listed = [r.name for r in await runs.list_runs(ctx, repo_id="github.com/acme/models")]
    everywhere = [r.name for r in await runs.list_runs(ctx)]

    assert listed == [*reversed(finished[-3:]), old]
    assert everywhere == [*reversed(finished[-3:]), other_repo, old]


async def test_stop_ends_waiting_jobs_at_once_and_asks_runner_for_running_ones(
    ctx: ServerContext,
) -> None:
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission(job(cpu=2), job(cpu=2)))
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None

    stopped = await runs.stop_run(ctx, name=run.name)

    assert [(j.status, j.reason) for j in stopped.jobs] == [
        (JobStatus.PROVISIONING, None),
        (JobStatus.STOPPED, TerminationReason.STOPPED_BY_USER),
    ]
    answer = await runner_service.heartbeat(
        ctx, runner_id=runner_id, request=HeartbeatRequest(running_jobs=[assignment.job_id])
    )
    assert (answer.stop_jobs, answer.abort_jobs, answer.forget_jobs) == (
        [assignment.job_id],
        [],
        [],
    )
    await runs.stop_run(ctx, name=run.name, abort=True)
    answer = await runner_service.heartbeat(
        ctx, runner_id=runner_id, request=HeartbeatRequest(running_jobs=[assignment.job_id])
    )
    assert answer.abort_jobs == [assignment.job_id]

    update = JobStatusUpdate(status=JobStatus.ABORTED)
    await job_service.report_status(
        ctx, job_id=assignment.job_id, update=update, runner_id=runner_id
    )
    final = await runs.get_run(ctx, name=run.name)
    assert final.status is JobStatus.ABORTED
    assert final.jobs[0].reason is TerminationReason.ABORTED_BY_USER


async def test_reports_on_finished_or_foreign_jobs_are_forbidden(ctx: ServerContext) -> None:
    runner_id = await register(ctx, "a")
    other = await register(ctx, "b")
    await runs.submit_run(ctx, request=submission(job()))
    assignment = await claims.try_claim(ctx, runner_id=runner_id)
    assert assignment is not None
    running = JobStatusUpdate(status=JobStatus.RUNNING)

    with pytest.raises(Forbidden, match="not held by this runner"):
        await job_service.report_status(
            ctx, job_id=assignment.job_id, update=running, runner_id=other
        )
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=assignment.job_id, update=done, runner_id=runner_id)
    # The same final report again (its answer was lost) changes nothing and is not an error.
    await job_service.report_status(ctx, job_id=assignment.job_id, update=done, runner_id=runner_id)
    with pytest.raises(Forbidden, match="already done"):
        await job_service.report_status(
            ctx, job_id=assignment.job_id, update=running, runner_id=runner_id
        )
    failed = JobStatusUpdate(status=JobStatus.FAILED, exit_code=1)
    with pytest.raises(Forbidden, match="already done"):
        await job_service.report_status(
            ctx, job_id=assignment.job_id, update=failed, runner_id=runner_id
        )
    with pytest.raises(Forbidden, match="not held by this runner"):
        await job_service.report_status(ctx, job_id=assignment.job_id, update=done, runner_id=other)
    final = (await runs.list_runs(ctx))[0].jobs[0]
    assert (final.status, final.exit_code) == (JobStatus.DONE, 0)


async def test_a_listing_beyond_the_finished_jobs_kept_reads_as_each_run_alone(
    ctx: ServerContext, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer finished jobs kept than the listing shows: it mixes kept and freshly read jobs,
    # finished and unfinished ones (whose timings count up to now).
    monkeypatch.setattr(job_service, "_FINISHED_KEPT", 3)
    monkeypatch.setattr(job_service, "_FINISHED", OrderedDict())
    names: list[str] = []
    for _ in range(4):
        clock.advance(1)
        run = await runs.submit_run(ctx, request=submission(job(), job(deps=[0])))
        await runs.stop_run(ctx, name=run.name, abort=len(names) % 2 == 1)
        names.append(run.name)
    clock.advance(1)
    active = await runs.submit_run(ctx, request=submission())
    clock.advance(30)

    alone = [await runs.get_run(ctx, name=name) for name in [active.name, *reversed(names)]]
    listed = await runs.list_runs(ctx, all=True)
    again = await runs.list_runs_page(ctx, limit=10)

    assert listed == alone
    assert again == alone
    assert [r.status for r in listed] == [
        JobStatus.SUBMITTED,
        *[JobStatus.ABORTED, JobStatus.STOPPED] * 2,
    ]
    assert listed[0].jobs[0].timings.queued == pytest.approx(30)
    assert len(job_service._FINISHED) == 3


async def test_delete_refuses_unfinished_runs_then_removes_everything(
    ctx: ServerContext,
) -> None:
    run = await runs.submit_run(ctx, request=submission())
    with pytest.raises(ConflictError, match="dstack stop"):
        await runs.delete_run(ctx, name=run.name)

    await runs.stop_run(ctx, name=run.name)
    await runs.delete_run(ctx, name=run.name)

    with pytest.raises(NotFoundError):
        await runs.get_run(ctx, name=run.name)
    assert await runs.list_runs(ctx, all=True) == []


async def test_a_restarted_runner_keeps_its_id_and_the_jobs_it_recovers(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission())
    held = await claims.try_claim(ctx, runner_id=runner_id)
    assert held is not None
    clock.advance(1)

    assert await register(ctx) == runner_id
    # The restarted runner lists the job while it syncs its folder, then reports it.
    clock.advance(60)
    listed = HeartbeatRequest(running_jobs=[held.job_id])
    await runner_service.heartbeat(ctx, runner_id=runner_id, request=listed)
    kept = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert kept.status.is_active()


async def test_a_restarted_runner_loses_the_jobs_it_does_not_list_after_a_grace(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx)
    run = await runs.submit_run(ctx, request=submission())
    assert await claims.try_claim(ctx, runner_id=runner_id) is not None
    clock.advance(1)
    assert await register(ctx) == runner_id

    empty = HeartbeatRequest(running_jobs=[])
    await runner_service.heartbeat(ctx, runner_id=runner_id, request=empty)
    assert (await runs.get_run(ctx, name=run.name)).jobs[0].status.is_active()
    clock.advance(ctx.settings.runner_heartbeat_timeout + 1)
    await runner_service.heartbeat(ctx, runner_id=runner_id, request=empty)

    lost = (await runs.get_run(ctx, name=run.name)).jobs[0]
    assert (lost.status, lost.reason) == (JobStatus.FAILED, TerminationReason.RUNNER_LOST)
    assert lost.message == "runner 'local' restarted and did not recover the job"


async def test_listings_keep_finished_jobs_fixed_and_running_ones_current(
    ctx: ServerContext, clock: FakeClock
) -> None:
    runner_id = await register(ctx, "a")
    run = await runs.submit_run(ctx, request=submission(job(cpu=1), job(cpu=1)))
    first = await claims.try_claim(ctx, runner_id=runner_id)
    second = await claims.try_claim(ctx, runner_id=runner_id)
    assert first is not None
    assert second is not None
    for assignment in (first, second):
        await job_service.report_status(
            ctx,
            job_id=assignment.job_id,
            update=JobStatusUpdate(status=JobStatus.RUNNING),
            runner_id=runner_id,
        )
    clock.advance(5)
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=first.job_id, update=done, runner_id=runner_id)

    before = {j.id: j for j in (await runs.get_run(ctx, name=run.name)).jobs}
    clock.advance(60)
    listed = await runs.list_runs(ctx, all=True)
    after = {j.id: j for j in next(r for r in listed if r.name == run.name).jobs}

    # The finished job reads the same however often it is listed; the running one counts up.
    assert after[first.job_id] == before[first.job_id]
    assert after[first.job_id].timings.running == pytest.approx(5)
    assert after[second.job_id].timings.running == pytest.approx(65)
    await job_service.report_status(ctx, job_id=second.job_id, update=done, runner_id=runner_id)
    final = {j.id: j for j in (await runs.get_run(ctx, name=run.name)).jobs}
    assert final[second.job_id].status is JobStatus.DONE
    assert final[second.job_id].timings.running == pytest.approx(65)
    assert final[second.job_id].runner_name == "a"


async def test_listings_spliced_from_kept_json_read_as_built_from_models(
    ctx: ServerContext, clock: FakeClock
) -> None:
    # Finished jobs keep their API JSON; listings splice it, with what may change after a
    # job finished read anew: its runner renamed or removed, its instance terminated.
    a = await register(ctx, "a", host(cpus=4))
    b = await register(ctx, "b")
    async with ctx.transaction() as session:
        instance = instance_row("aws", "ready", name="i-a")
        instance.runner_id = a
        session.add(instance)
    busy = await runs.submit_run(ctx, request=submission(*[job(cpu=1)] * 3))
    claimed = [await claims.try_claim(ctx, runner_id=a) for _ in range(3)]
    ports = JobStatusUpdate(status=JobStatus.RUNNING, host_ports=[8080, 9090])
    for held in claimed:
        assert held is not None
        await job_service.report_status(ctx, job_id=held.job_id, update=ports, runner_id=a)
    clock.advance(5)
    ends = [
        JobStatusUpdate(status=JobStatus.DONE, exit_code=0),
        JobStatusUpdate(status=JobStatus.FAILED, exit_code=3, message='"bad" \u00e9\n'),
    ]
    for held, end in zip(claimed, ends, strict=False):
        assert held is not None
        await job_service.report_status(ctx, job_id=held.job_id, update=end, runner_id=a)
    clock.advance(1)
    gone = await runs.submit_run(ctx, request=submission())
    on_b = await claims.try_claim(ctx, runner_id=b)
    assert on_b is not None
    await job_service.report_status(ctx, job_id=on_b.job_id, update=ends[0], runner_id=b)
    clock.advance(1)
    stopped = await runs.submit_run(ctx, request=submission(job(), job(deps=[0])))
    await runs.stop_run(ctx, name=stopped.name)
    clock.advance(1)
    older = await runs.submit_run(ctx, request=submission())
    await runs.stop_run(ctx, name=older.name, abort=True)
    clock.advance(1)
    waiting = await runs.submit_run(ctx, request=submission())
    async with ctx.transaction() as session:
        # A job finished before migration 0014 kept nothing; one kept by another schema of
        # `Job` is read as if it had kept nothing.
        older_job = select(JobRow.id).where(JobRow.run_name == older.name)
        await session.execute(update(JobRow).where(JobRow.id.in_(older_job)).values(api_json=None))
        first = select(JobRow).where(JobRow.run_name == stopped.name, JobRow.index == 0)
        first_job = (await session.scalars(first)).one()
        assert first_job.api_json is not None
        text = zlib.decompress(first_job.api_json).decode()
        first_job.api_json = zlib.compress(("0" * 16 + text[16:]).encode())
        row = await session.get(InstanceRow, "i-a")
        assert row is not None
        row.state = "terminated"
        kept = await session.scalars(select(JobRow.api_json).where(JobRow.api_json.is_not(None)))
        # Spliced: the jobs finished since (the other mark is not).
        assert [job_service.kept_json(t) is not None for t in kept.all()].count(True) == 4
    await runner_service.register(ctx, runner_id=a, request=_renamed("a-renamed"))
    await runner_service.remove_runner(ctx, name="b")
    clock.advance(60)

    adapter = TypeAdapter(list[Run])
    every = await runs.list_runs(ctx, all=True)
    assert await runs.list_runs_json(ctx, all=True) == adapter.dump_json(every).decode()
    ctx.settings.finished_runs_listed = 2
    recent = adapter.dump_json(await runs.list_runs(ctx)).decode()
    assert await runs.list_runs_json(ctx) == recent
    page = adapter.dump_json(await runs.list_runs_page(ctx, limit=3)).decode()
    assert await runs.list_runs_page_json(ctx, limit=3) == page
    for run in every:
        assert await runs.get_run_json(ctx, name=run.name) == run.model_dump_json()
    shown = {r.name: r for r in every}
    assert [r.name for r in every] == [waiting.name, older.name, stopped.name, gone.name, busy.name]
    assert [j.runner_name for j in shown[busy.name].jobs] == ["a-renamed"] * 3
    assert shown[gone.name].jobs[0].runner_name is None
    busy_jobs = shown[busy.name].jobs
    assert [j.status for j in busy_jobs] == [JobStatus.DONE, JobStatus.FAILED, JobStatus.RUNNING]
    assert {j.instance.state for j in busy_jobs if j.instance} == {"terminated"}
    assert busy_jobs[0].cost == pytest.approx(0.1 * 5 / 3600, abs=1e-6)
    assert busy_jobs[1].message == '"bad" \u00e9\n'
    assert shown[busy.name].status is JobStatus.RUNNING


async def test_an_imported_run_keeps_its_jobs_api_json(ctx: ServerContext) -> None:
    copied = await runs.submit_run(ctx, request=submission(job(), job(deps=[0])))
    await runs.stop_run(ctx, name=copied.name)
    source = await runs.get_run(ctx, name=copied.name)
    jobs = [j.model_copy(update={"id": f"{j.index:032x}"}) for j in source.jobs]
    run = source.model_copy(update={"name": "copied-run-1", "jobs": jobs})

    await imports.import_run(ctx, request=ImportRunRequest(run=run, artifacts=[]), user="bob")

    async with ctx.connect() as connection:
        query = select(JobRow.api_json).where(JobRow.run_name == "copied-run-1")
        kept = (await connection.scalars(query)).all()
    assert [job_service.kept_json(text) is not None for text in kept] == [True, True]
    imported = await runs.get_run(ctx, name="copied-run-1")
    assert await runs.get_run_json(ctx, name="copied-run-1") == imported.model_dump_json()
    assert [j.status for j in imported.jobs] == [JobStatus.STOPPED] * 2


def _renamed(name: str) -> RegisterRunnerRequest:
    return RegisterRunnerRequest(
        name=name, host="localhost", resources=host(cpus=4), executors=["process"]
    )


def test_the_unfinished_jobs_index_names_every_finished_status() -> None:
    from dstack.server.db.models import UNFINISHED_JOB  # only this test reads the predicate

    named = set(re.findall(r"'(\w+)'", UNFINISHED_JOB.text))

    assert named == {status.value for status in JobStatus if status.is_finished()}
