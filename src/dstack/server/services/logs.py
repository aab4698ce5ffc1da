"""Logs: runners append batches (idempotent per `(job, seq)`); users page through a run's
lines, ordered by job index then seq, optionally long-polling for more."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, bindparam, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dstack.errors import NotFoundError
from dstack.models.bounds import INT32_MAX
from dstack.models.job import JobStatus
from dstack.models.logs import LogEvent, LogStream
from dstack.models.protocol import LogBatch, LogsPage
from dstack.server.context import Notifier, ServerContext, mark_changed
from dstack.server.db.models import JobRow, LogRow, RunRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services import jobs as job_service
from dstack.server.services import runs as run_service

MAX_PAGE = 10_000
# A page stops growing once it holds this many characters of output (at least one entry):
# entries are chunks of up to 64 KiB, so 10,000 of them would be far too much for one answer.
MAX_PAGE_CHARS = 8 << 20
LINGER = 0.025
"""Seconds a waiting request with lines to answer still waits for more, or for the run's end."""
# Entries read per query while filling a page.
_FETCH = 256


async def append_logs(ctx: ServerContext, *, job_id: str, batch: LogBatch, runner_id: str) -> None:
    """Store the lines; lines whose seq is already stored are ignored (resending is safe).

    Seqs count from 0 in each attempt of a job; they are stored after the earlier attempts'
    lines (`jobs.log_base`). Only runner `runner_id`, while it holds the job and the job is
    not final (404/403 otherwise, `jobs.require_held_job`): a runner ships every line before
    it reports the final status.
    """
    if not batch.lines:
        async with ctx.read() as session:
            await job_service.require_held_job(session, job_id, runner_id)
        return
    async with ctx.transaction() as session:
        job = await job_service.require_held_job(session, job_id, runner_id)
        # A re-queued job's runner numbers its lines from 0: they follow the lines kept of
        # the earlier attempts (`jobs.requeue`).
        requeued = any("log_from" in change for change in job.history)
        base = job_service.log_base(job_service.history(job)) if requeued else 0
        if base and max(line.seq for line in batch.lines) + base > INT32_MAX:
            raise InvalidRequestError(f"job {job_id} has too many log lines")
        rows = [
            {
                "job_id": job_id,
                "seq": line.seq + base,
                "timestamp": line.timestamp,
                "stream": line.stream.value,
                "data": line.data,
            }
            for line in batch.lines
        ]
        await session.execute(_insert_ignore(ctx.engine.dialect.name), rows)
        mark_changed(session)


def _insert_ignore(dialect: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the dialect at hand."""
    table: Any = LogRow.__table__
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # see `db/dialects.py`

        return pg_insert(table).on_conflict_do_nothing(index_elements=["job_id", "seq"])
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=["job_id", "seq"])


@dataclass
class _JobPosition:
    id: str
    index: int
    status: JobStatus
    last_seq: int | None
    """The job's highest stored seq when its status was read (None: no line yet)."""


async def get_logs(
    ctx: ServerContext,
    *,
    run_name: str,
    cursor: str | None = None,
    since: datetime | None = None,
    wait: float = 0.0,
    limit: int = MAX_PAGE,
    with_run: bool = False,
) -> LogsPage:
    """Up to `limit` (≤ 10,000) lines after `cursor`, at or after `since`.

    With `wait` > 0 and nothing new, waits up to that many seconds for lines or for the run to
    finish, returning as soon as either happens. `finished` is true once the run is finished
    and this page holds its last line; with `with_run`, that page also carries the run
    (`LogsPage.run`). Runners must ship a job's lines before reporting its
    final status, or lines may arrive after a client saw `finished`.
    """
    limit = max(1, min(limit, MAX_PAGE))
    positions = parse_cursor(cursor)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    answer_by = deadline
    while True:
        event = ctx.notifier.current()
        page, more = await _read_page(ctx, run_name, positions, since, limit, with_run)
        now = loop.time()
        if page.events and not more:
            # Lines came: they are answered within `LINGER`, which lets the run's end (its
            # last job's final status follows its last lines by a few milliseconds) come in
            # the same answer instead of one more request.
            answer_by = min(answer_by, now + LINGER)
        if page.finished or more or now >= answer_by or ctx.draining:
            return page
        await Notifier.wait(event, answer_by - now)
        if page.events and not event.is_set():
            return page  # nothing changed since it was read


async def _read_page(
    ctx: ServerContext,
    run_name: str,
    positions: dict[int, int],
    since: datetime | None,
    limit: int,
    with_run: bool,
) -> tuple[LogsPage, bool]:
    """The page, and whether more lines than it holds were there."""
    # Read with Core: rows read once need none of an ORM session's work per statement.
    async with ctx.connect() as connection:
        jobs = await _jobs_of(connection, run_name)
        # Read the statuses first: lines stored before a job finished are then all visible.
        run_finished = all(job.status.is_finished() for job in jobs)
        page = _PageBuilder(limit, positions)
        for job in jobs:
            if not await _fill(connection, page, job, since):
                break
        finished = run_finished and not page.more
        # With `with_run`, the last page carries the run's final state: a client following
        # the logs (`dstack run`) would otherwise ask for it in one more request. Others
        # (`dstack logs`, dashboards) do not pay for reading it.
        run = (
            await run_service.read_run(ctx, connection, run_name) if with_run and finished else None
        )
    answer = LogsPage.model_construct(
        events=page.events, cursor=format_cursor(page.positions), finished=finished, run=run
    )
    return answer, page.more


class _PageBuilder:
    """Collects entries until the page holds `limit` of them or `MAX_PAGE_CHARS`."""

    def __init__(self, limit: int, positions: dict[int, int]) -> None:
        self.limit = limit
        self.positions = dict(positions)
        self.events: list[LogEvent] = []
        self.chars = 0
        self.more = False

    def full(self) -> bool:
        return len(self.events) >= self.limit or self.chars >= MAX_PAGE_CHARS

    def add(self, job: _JobPosition, row: _Line) -> None:
        seq, timestamp, stream, data = row
        # Rows come from the database, typed by the ORM: validating each again costs more
        # than the query on a page of thousands.
        self.events.append(
            LogEvent.model_construct(
                job_id=job.id, seq=seq, timestamp=timestamp, stream=LogStream(stream), data=data
            )
        )
        self.chars += len(data)
        self.positions[job.index] = seq


async def _fill(
    connection: AsyncConnection, page: _PageBuilder, job: _JobPosition, since: datetime | None
) -> bool:
    """Add the job's entries after its position; False when the page filled up first (the
    job, or a later one, has more)."""
    while True:
        after = page.positions.get(job.index, -1)
        if job.last_seq is None or job.last_seq <= after:
            # Nothing new: a run of many jobs, most of them waiting or read to their end,
            # costs one query per page instead of one per job. Lines stored after the
            # statuses were read come with the next page; they cannot belong to a job that
            # was finished then (runners ship every line before the final status).
            return True
        if page.full():
            page.more = True
            return False
        rows = await _lines(
            connection, job.id, after, since, min(page.limit - len(page.events), _FETCH)
        )
        for row in rows:
            if page.full():
                page.more = True
                return False
            page.add(job, row)
        if len(rows) < _FETCH:
            return True


# The statements of a page are built once: building a statement and its cache key costs
# more than running it on SQLite (values go in as bound parameters).
_LAST_SEQ = select(func.max(LogRow.seq)).where(LogRow.job_id == JobRow.id).scalar_subquery()
_JOBS_OF = (
    select(JobRow.id, JobRow.index, JobRow.status, _LAST_SEQ)
    .where(JobRow.run_name == bindparam("run_name"))
    .order_by(JobRow.index)
)
_RUN_EXISTS = select(RunRow.name).where(RunRow.name == bindparam("run_name"))


async def _jobs_of(connection: AsyncConnection, run_name: str) -> list[_JobPosition]:
    rows = await connection.execute(_JOBS_OF, {"run_name": run_name})
    jobs = [_JobPosition(id, index, JobStatus(status), last) for id, index, status, last in rows]
    # Every run has a job: the run's row is read only when none was found.
    if not jobs and await connection.scalar(_RUN_EXISTS, {"run_name": run_name}) is None:
        raise NotFoundError(f"run '{run_name}' not found", hint="see `dstack ps -a`")
    return jobs


_Line = tuple[int, datetime, str, str]


_LINES = (
    select(LogRow.seq, LogRow.timestamp, LogRow.stream, LogRow.data)
    .where(LogRow.job_id == bindparam("job_id"), LogRow.seq > bindparam("after"))
    .order_by(LogRow.seq)
    .limit(bindparam("limit"))
)
_LINES_SINCE = (
    select(LogRow.seq, LogRow.timestamp, LogRow.stream, LogRow.data)
    .where(
        LogRow.job_id == bindparam("job_id"),
        LogRow.seq > bindparam("after"),
        LogRow.timestamp >= bindparam("since"),
    )
    .order_by(LogRow.seq)
    .limit(bindparam("limit"))
)


async def _lines(
    connection: AsyncConnection, job_id: str, after: int, since: datetime | None, limit: int
) -> Sequence[_Line]:
    params: dict[str, Any] = {"job_id": job_id, "after": after, "limit": limit}
    query = _LINES
    if since is not None:
        query, params["since"] = _LINES_SINCE, since
    result = await connection.execute(query, params)
    return [(seq, timestamp, stream, data) for seq, timestamp, stream, data in result]


def parse_cursor(cursor: str | None) -> dict[int, int]:
    """`"0:41,1:7"` → {job index: last seq returned}."""
    if not cursor:
        return {}
    try:
        pairs = (part.split(":") for part in cursor.split(","))
        return {int(index): int(seq) for index, seq in pairs}
    except ValueError:
        raise InvalidRequestError(
            f"invalid logs cursor '{cursor}'", hint="pass back the cursor of the previous page"
        ) from None


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{index}:{seq}" for index, seq in sorted(positions.items()))
