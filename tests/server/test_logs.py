from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dstack.errors import NotFoundError
from dstack.models.job import JobStatus
from dstack.models.logs import LogStream
from dstack.models.protocol import JobStatusUpdate, LogBatch, LogLine
from dstack.server.context import ServerContext
from dstack.server.errors import InvalidRequestError
from dstack.server.services import claims, logs, runs
from dstack.server.services import jobs as job_service

from .conftest import FakeClock, job, register, submission

pytestmark = pytest.mark.anyio


def batch(clock: FakeClock, seqs: range, prefix: str = "line") -> LogBatch:
    return LogBatch(
        lines=[
            LogLine(
                seq=s,
                timestamp=clock.now + timedelta(seconds=s),
                stream=LogStream.STDOUT,
                data=f"{prefix} {s}\n",
            )
            for s in seqs
        ]
    )


async def _started_run(ctx: ServerContext, jobs: int = 1) -> tuple[str, list[str], str]:
    runner_id = await register(ctx, "big")
    run = await runs.submit_run(ctx, request=submission(*[job() for _ in range(jobs)]))
    ids = []
    for _ in range(jobs):
        assignment = await claims.try_claim(ctx, runner_id=runner_id)
        assert assignment is not None
        ids.append(assignment.job_id)
    return run.name, ids, runner_id


async def test_resent_lines_are_ignored_and_order_is_by_seq(
    ctx: ServerContext, clock: FakeClock
) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    await logs.append_logs(
        ctx, job_id=job_id, batch=batch(clock, range(5, 10)), runner_id=runner_id
    )
    await logs.append_logs(
        ctx, job_id=job_id, batch=batch(clock, range(0, 7), prefix="again"), runner_id=runner_id
    )

    page = await logs.get_logs(ctx, run_name=name)

    assert [e.seq for e in page.events] == list(range(10))
    assert page.events[5].data == "line 5\n"  # the first copy stays
    assert not page.finished


async def test_pages_with_cursor_cover_every_line_once(
    ctx: ServerContext, clock: FakeClock
) -> None:
    name, [first, second], runner_id = await _started_run(ctx, jobs=2)
    await logs.append_logs(
        ctx, job_id=second, batch=batch(clock, range(0, 3000)), runner_id=runner_id
    )
    await logs.append_logs(
        ctx, job_id=first, batch=batch(clock, range(0, 25_000)), runner_id=runner_id
    )
    for job_id in (first, second):
        done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
        await job_service.report_status(ctx, job_id=job_id, update=done, runner_id=runner_id)

    seen: list[tuple[str, int]] = []
    cursor = None
    pages = 0
    while True:
        page = await logs.get_logs(ctx, run_name=name, cursor=cursor)
        pages += 1
        seen += [(e.job_id, e.seq) for e in page.events]
        cursor = page.cursor
        if page.finished:
            break
        assert len(page.events) == logs.MAX_PAGE

    assert pages == 3
    assert seen == [(first, s) for s in range(25_000)] + [(second, s) for s in range(3000)]


async def test_lines_of_an_earlier_job_after_the_cursor_moved_on_are_not_lost(
    ctx: ServerContext, clock: FakeClock
) -> None:
    name, [first, second], runner_id = await _started_run(ctx, jobs=2)
    await logs.append_logs(ctx, job_id=first, batch=batch(clock, range(0, 2)), runner_id=runner_id)
    await logs.append_logs(ctx, job_id=second, batch=batch(clock, range(0, 2)), runner_id=runner_id)
    page = await logs.get_logs(ctx, run_name=name)
    await logs.append_logs(ctx, job_id=first, batch=batch(clock, range(2, 4)), runner_id=runner_id)

    later = await logs.get_logs(ctx, run_name=name, cursor=page.cursor)

    assert [(e.job_id, e.seq) for e in later.events] == [(first, 2), (first, 3)]


async def test_since_filters_by_timestamp(ctx: ServerContext, clock: FakeClock) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    await logs.append_logs(
        ctx, job_id=job_id, batch=batch(clock, range(0, 10)), runner_id=runner_id
    )

    page = await logs.get_logs(ctx, run_name=name, since=clock.now + timedelta(seconds=7))

    assert [e.seq for e in page.events] == [7, 8, 9]


async def test_wait_returns_as_soon_as_a_line_arrives(ctx: ServerContext, clock: FakeClock) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    polling = asyncio.create_task(logs.get_logs(ctx, run_name=name, wait=30))
    await asyncio.sleep(0.1)
    assert not polling.done()

    await logs.append_logs(ctx, job_id=job_id, batch=batch(clock, range(0, 1)), runner_id=runner_id)
    page = await asyncio.wait_for(polling, timeout=10)

    assert [e.data for e in page.events] == ["line 0\n"]


async def test_wait_returns_when_the_run_finishes(ctx: ServerContext) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    polling = asyncio.create_task(logs.get_logs(ctx, run_name=name, wait=30, with_run=True))
    await asyncio.sleep(0.1)

    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=job_id, update=done, runner_id=runner_id)
    page = await asyncio.wait_for(polling, timeout=10)

    assert page.events == []
    assert page.finished
    assert page.run is not None
    assert page.run.status is JobStatus.DONE
    assert [j.exit_code for j in page.run.jobs] == [0]
    # Without asking, the last page is the same but for the run.
    plain = await logs.get_logs(ctx, run_name=name)
    assert plain.finished
    assert plain.run is None


async def test_a_job_ending_right_after_its_last_lines_is_one_answer(
    ctx: ServerContext, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short job's lines and its final status come a few milliseconds apart: a follower
    # (`dstack run`) gets both in one answer instead of asking once more for the end. (The
    # answer's delay is stretched so that this holds on a loaded machine too.)
    monkeypatch.setattr(logs, "LINGER", 10.0)
    name, [job_id], runner_id = await _started_run(ctx)
    polling = asyncio.create_task(logs.get_logs(ctx, run_name=name, wait=30, with_run=True))
    await asyncio.sleep(0.1)

    await logs.append_logs(ctx, job_id=job_id, batch=batch(clock, range(2)), runner_id=runner_id)
    await asyncio.sleep(0.2)  # the follower has read the lines
    assert not polling.done()
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=job_id, update=done, runner_id=runner_id)
    page = await asyncio.wait_for(polling, timeout=10)

    assert [e.data for e in page.events] == ["line 0\n", "line 1\n"]
    assert page.finished
    assert page.run is not None
    assert page.run.status is JobStatus.DONE


async def test_lines_of_a_job_still_running_are_answered_without_waiting_for_its_end(
    ctx: ServerContext, clock: FakeClock
) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    polling = asyncio.create_task(logs.get_logs(ctx, run_name=name, wait=30))
    await asyncio.sleep(0.1)

    await logs.append_logs(ctx, job_id=job_id, batch=batch(clock, range(1)), runner_id=runner_id)
    page = await asyncio.wait_for(polling, timeout=10)  # not the 30 s of `wait`

    assert [e.data for e in page.events] == ["line 0\n"]
    assert not page.finished


async def test_only_the_last_page_carries_the_run(ctx: ServerContext, clock: FakeClock) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    await logs.append_logs(ctx, job_id=job_id, batch=batch(clock, range(3)), runner_id=runner_id)

    page = await logs.get_logs(ctx, run_name=name, with_run=True)

    assert not page.finished
    assert page.run is None


async def test_bad_cursor_and_unknown_run(ctx: ServerContext) -> None:
    name, _, _ = await _started_run(ctx)
    with pytest.raises(InvalidRequestError, match="invalid logs cursor"):
        await logs.get_logs(ctx, run_name=name, cursor="garbage")
    with pytest.raises(NotFoundError, match="run 'nope' not found"):
        await logs.get_logs(ctx, run_name="nope")


async def test_pages_of_large_entries_stay_bounded_and_cover_everything(
    ctx: ServerContext, clock: FakeClock
) -> None:
    name, [job_id], runner_id = await _started_run(ctx)
    chunk = "".join(f"{i:07d}\n" for i in range(8192))  # 64 KiB: one entry of many lines
    entries = 300  # about 19.7 M characters in all
    for start in range(0, entries, 50):
        lines = [
            LogLine(seq=s, timestamp=clock.now, stream=LogStream.STDOUT, data=chunk)
            for s in range(start, start + 50)
        ]
        await logs.append_logs(ctx, job_id=job_id, batch=LogBatch(lines=lines), runner_id=runner_id)
    done = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
    await job_service.report_status(ctx, job_id=job_id, update=done, runner_id=runner_id)

    seqs: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await logs.get_logs(ctx, run_name=name, cursor=cursor)
        pages += 1
        assert sum(len(e.data) for e in page.events) <= logs.MAX_PAGE_CHARS
        assert all(e.data == chunk for e in page.events)
        seqs += [e.seq for e in page.events]
        cursor = page.cursor
        if page.finished:
            break

    assert seqs == list(range(entries))
    assert pages == 3  # 128 entries fill a page of 8 M characters
