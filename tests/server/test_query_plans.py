"""A server with a long history reads its few unfinished jobs through an index, never by
walking every job: SQLite plans with the statistics `ANALYZE` leaves, and a status that
nine rows of ten share makes `status IN (…)` look unselective, so a query that states only
that walks all jobs (about a second per scheduler tick at a million jobs, with every
request waiting behind it). The statistics here are those of a million finished jobs; every
statement on `jobs` that the scheduler, claims, the idle check, GC and `dstack ps` send is
explained."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from dstack.models.job import JobStatus
from dstack.models.protocol import JobStatusUpdate
from dstack.server.app import running_context
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import claims, gc, runs
from dstack.server.services import jobs as job_service
from dstack.server.services import runners as runner_service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import FakeClock, job, register, submission

pytestmark = pytest.mark.anyio

JOBS = 1_000_000
# (index, stat): rows, then rows per distinct value of each leading column
STATS = {
    "ix_jobs_status_submitted": f"{JOBS} 250000 1",
    "ix_jobs_status_at": f"{JOBS} 250000 1",
    "ix_jobs_run_name": f"{JOBS} 10",
    "ix_jobs_runner_id": f"{JOBS} 1000",
    "ix_jobs_cache_key": f"{JOBS} 10",
    "ix_jobs_unfinished": "20 2",
    None: f"{JOBS}",
}
WALK = re.compile(r"^SCAN (jobs|jobs_\d+)\b(?! USING (COVERING )?INDEX ix_jobs_unfinished)")


def _long_history(database: Path) -> None:
    connection = sqlite3.connect(database)
    try:
        connection.execute("ANALYZE")  # makes sqlite_stat1
        connection.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'jobs'")
        connection.executemany(
            "INSERT INTO sqlite_stat1 VALUES ('jobs', ?, ?)", list(STATS.items())
        )
        connection.commit()
    finally:
        connection.close()


def _walks(database: Path, statements: list[tuple[str, Any]]) -> list[str]:
    connection = sqlite3.connect(database)
    found = []
    try:
        for sql, parameters in statements:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
            found += [f"{detail}  <-  {sql}" for *_, detail in plan if WALK.match(detail)]
    finally:
        connection.close()
    return found


async def test_the_server_never_walks_every_job_of_a_long_history(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = ServerSettings(
        home=tmp_path / "home", token="t", user="alice", runner_token="runner-token"
    )
    async with running_context(settings, blobs=MemoryBlobStore(), clock=clock, background=False):
        pass  # the database, migrated to head
    database = settings.files.database
    _long_history(database)

    statements: list[tuple[str, Any]] = []
    async with running_context(
        settings, blobs=MemoryBlobStore(), clock=clock, background=False
    ) as ctx:

        @event.listens_for(ctx.engine.sync_engine, "before_cursor_execute")
        def seen(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
            if sql.lstrip().upper().startswith("SELECT") and re.search(r"\bjobs\b", sql):
                statements.append((sql, parameters))

        runner_id = await register(ctx, "local")
        run = await runs.submit_run(ctx, request=submission(job(name="prep"), job(deps=[0])))
        await Scheduler(ctx).tick()
        assert await job_service.server_busy(ctx)
        assignment = await claims.try_claim(ctx, runner_id=runner_id)
        assert assignment is not None
        await runner_service.list_runners(ctx)
        update = JobStatusUpdate(status=JobStatus.DONE, exit_code=0)
        await job_service.report_status(
            ctx, job_id=assignment.job_id, update=update, runner_id=runner_id
        )
        clock.advance(3600)
        await Scheduler(ctx).tick()
        await runs.list_runs(ctx)
        await gc.collect(ctx)
        shown = await runs.get_run(ctx, name=run.name)

    assert [j.status for j in shown.jobs] == [JobStatus.DONE, JobStatus.PENDING], shown.jobs
    assert len(statements) > 10, statements
    assert _walks(database, statements) == []
