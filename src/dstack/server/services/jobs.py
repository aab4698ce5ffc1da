"""Jobs: the one function that changes a job's status, and rows → models."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

import pydantic_core
from pydantic import TypeAdapter
from pydantic_core import from_json
from sqlalchemy import Row, Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from dstack.errors import ConflictError, NotFoundError
from dstack.models.job import (
    RETRIED_REASONS,
    Job,
    JobSpec,
    JobStatus,
    JobTimings,
    StatusChange,
    TerminationReason,
    gang_indexes,
    held_seconds,
    job_attempts,
    retry_limit,
)
from dstack.models.protocol import JobStatusUpdate
from dstack.models.runner import RunnerStatus
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.base import get_row
from dstack.server.db.models import UNFINISHED_JOB, JobRow, LogRow, RunnerRow
from dstack.server.errors import Forbidden, InvalidRequestError
from dstack.server.services import tags

logger = logging.getLogger(__name__)

# Fields a caller may change together with the status (the claim sets the runner, ...).
_EXTRA_FIELDS = frozenset(
    {"runner_id", "gpu_indexes", "host_ports", "stop_requested", "apps_ready_at"}
)
# Back in the queue: the apps of the earlier attempt are gone.
_REQUEUED = frozenset({JobStatus.SUBMITTED, JobStatus.PENDING})
# Built once (building an UPDATE costs more than running it on SQLite): the columns to set
# are the keys of the parameters it is run with.
_JOBS = cast(Table, JobRow.__table__)
_UPDATE_IF_UNCHANGED = update(_JOBS).where(
    _JOBS.c.id == bindparam("_id"), _JOBS.c.version == bindparam("_version")
)


async def any_unfinished(session: AsyncSession) -> bool:
    """Whether a job waits or runs anywhere (one read of the partial index of unfinished
    jobs: by `status IN (…)` the planner walks all jobs on a long history)."""
    query = select(JobRow.id).where(UNFINISHED_JOB).limit(1)
    return await session.scalar(query) is not None


async def server_busy(ctx: ServerContext) -> bool:
    """Whether any job is unfinished: an idle local server may exit only when none is."""
    async with ctx.read() as session:
        return await any_unfinished(session)


async def set_status(
    session: AsyncSession,
    job: JobRow,
    status: JobStatus,
    *,
    now: datetime,
    reason: TerminationReason | None = None,
    message: str | None = None,
    exit_code: int | None = None,
    runner: str | None = None,
    log_from: int | None = None,
    **fields: Any,
) -> bool:
    """Move `job` to `status`: stamp the time (`status_at`, which deadlines count from),
    append to the history, record reason, message and exit code, set `finished_at` for a
    terminal status, and wake waiters after commit. `runner` (the claimer's name) and
    `log_from` (a re-queue's first log seq) go into the history entry only.

    The update applies only if the job is unchanged since it was read (its `version`); it
    returns False when another writer got there first (a concurrent claim, a runner's report)
    and changes nothing. A change out of a finished status is ignored, logged, and returns
    False. Re-stating the current status with the same reason and message is a no-op (True),
    or, with `fields`, changes only those (no history entry: the status did not change).
    A job put back in the queue loses its `apps_ready_at`.
    A job becoming done may complete its run, which then gets the tag it was submitted with.
    """
    unknown = set(fields) - _EXTRA_FIELDS
    if unknown:
        raise TypeError(f"set_status cannot change {sorted(unknown)}")
    current = JobStatus(job.status)
    if current.is_finished():
        logger.warning("ignored %s -> %s for finished job %s", current, status, job.id)
        return False
    same = (current, job.reason, job.message) == (status, reason, message)
    if same and not fields and exit_code is None:
        return True
    change = StatusChange(
        status=status, at=now, reason=reason, message=message, runner=runner, log_from=log_from
    )
    entry = change.model_dump(mode="json", exclude_none=True)
    values: dict[str, Any] = {
        "status": status.value,
        "reason": reason.value if reason else None,
        "message": message,
        "exit_code": exit_code if exit_code is not None else job.exit_code,
        "history": job.history if same else [*job.history, entry],
        "finished_at": now if status.is_finished() else None,
        "status_at": job.status_at if current is status else now,
        "version": job.version + 1,
        **({"apps_ready_at": None} if status in _REQUEUED else {}),
        **fields,
    }
    if status.is_finished():  # it never changes again: what the API shows of it is kept
        values["api_json"] = api_json({c: getattr(job, c) for c in _API_COLUMNS} | values)
    result = await session.execute(
        _UPDATE_IF_UNCHANGED, {"_id": job.id, "_version": job.version, **values}
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    for key, value in values.items():
        set_committed(job, key, value)
    # A finished job frees resources and may complete dependencies; a job back in the
    # queue can be claimed. Other moves give no runner anything new to do.
    mark_changed(
        session,
        work=status.is_finished() or (status in _REQUEUED and current not in _REQUEUED),
        routine=status is JobStatus.DONE,
    )
    if status is JobStatus.DONE:
        await tags.on_job_done(session, job, now)
    elif status.is_finished() and reason not in _USER_STOPS:
        await stop_gang(session, job, now)
    return True


# A user's stop reaches every job of the run by itself (`runs.stop_run`).
_USER_STOPS = frozenset({TerminationReason.STOPPED_BY_USER, TerminationReason.ABORTED_BY_USER})


def node_failure(job: JobRow) -> str:
    """`node 1 failed: exit code 3`: how a node of a gang ended, for the other nodes."""
    spec = JobSpec.model_validate(job.spec)
    if job.exit_code is not None and job.reason == TerminationReason.EXIT_CODE.value:
        detail = f"exit code {job.exit_code}"
    else:
        detail = job.message or job.reason or job.status
    return f"node {spec.node_rank} {job.status}: {detail}"


async def stop_gang(session: AsyncSession, job: JobRow, now: datetime) -> None:
    """Node `job` of a multi-node job ended without success: the other nodes stop too —
    those not started at once, the started ones through their runners' heartbeats (their
    runners then report them `stopped`, `report_status` names the node)."""
    spec = JobSpec.model_validate(job.spec)
    if spec.resources.nodes <= 1:
        return
    indexes = [i for i in gang_indexes(job.index, spec) if i != job.index]
    query = select(JobRow).where(JobRow.run_name == job.run_name, JobRow.index.in_(indexes))
    message = node_failure(job)
    for other in (await session.scalars(query)).all():
        status = JobStatus(other.status)
        if status.is_finished():
            continue
        if status.is_active():
            if not other.stop_requested:
                other.stop_requested = "stop"
                mark_changed(session)
            continue
        await set_status(
            session,
            other,
            JobStatus.STOPPED,
            now=now,
            reason=TerminationReason.NODE_FAILED,
            message=message,
        )


async def _failed_node(session: AsyncSession, job: JobRow) -> str | None:
    """How another node of `job`'s gang ended without success, if one did."""
    spec = JobSpec.model_validate(job.spec)
    if spec.resources.nodes <= 1:
        return None
    indexes = [i for i in gang_indexes(job.index, spec) if i != job.index]
    query = (
        select(JobRow)
        .where(JobRow.run_name == job.run_name, JobRow.index.in_(indexes))
        .where(JobRow.status.in_([JobStatus.FAILED.value, JobStatus.ABORTED.value]))
        .order_by(JobRow.finished_at)
    )
    failed = (await session.scalars(query)).first()
    return node_failure(failed) if failed is not None else None


async def requeue(
    session: AsyncSession,
    job: JobRow,
    *,
    now: datetime,
    reason: TerminationReason,
    message: str,
    keep_logs: bool = False,
) -> bool:
    """Put `job` back in the queue (`submitted`) for any runner; False when it changed
    meanwhile (`set_status`).

    Its runner, GPUs, ports and stop request are dropped. The next attempt numbers its log
    lines from 0 again: the server stores them from the history entry's `log_from` on
    (`log_base`), after the lines it keeps. With `keep_logs` (an interruption: the runner
    shipped every line before reporting) the ended attempt's lines stay, followed by one
    line saying the attempt ended; otherwise (a lost runner, whose last lines are missing)
    they are dropped. The old runner, should it come back, is told to forget the job (it is
    no longer its own) and its late reports are refused. The history keeps `reason` (what
    counts attempts: `attempts`, `claim_requeues`).
    """
    base = log_base(history(job))
    last = await session.scalar(select(func.max(LogRow.seq)).where(LogRow.job_id == job.id))
    log_from = base
    if keep_logs and last is not None and last >= base:
        log_from = last + 2  # `last + 1` holds the line that ends the attempt
    requeued = await set_status(
        session,
        job,
        JobStatus.SUBMITTED,
        now=now,
        reason=reason,
        message=message,
        log_from=log_from or None,
        runner_id=None,
        gpu_indexes=[],
        host_ports=[],
        stop_requested=None,
    )
    if not requeued:
        return False
    if log_from > base:
        session.add(_attempt_end_line(job, last_seq=log_from - 1, now=now, message=message))
    else:
        await session.execute(delete(LogRow).where(LogRow.job_id == job.id, LogRow.seq >= base))
    return True


def _attempt_end_line(job: JobRow, *, last_seq: int, now: datetime, message: str) -> LogRow:
    number = len(job_attempts(history(job)))  # the claims so far: the last one just ended
    text = f"--- attempt {max(number, 1)} ended: {message} ---\n"
    return LogRow(job_id=job.id, seq=last_seq, timestamp=now, stream="stderr", data=text)


def log_base(changes: list[StatusChange]) -> int:
    """The first log seq of the current attempt: lines the runner numbers from 0 are stored
    from here on (0 until a re-queue kept lines)."""
    for change in reversed(changes):
        if change.log_from is not None:
            return change.log_from
    return 0


async def retry_or_fail(
    session: AsyncSession,
    job: JobRow,
    *,
    now: datetime,
    reason: TerminationReason,
    message: str,
    exit_code: int | None = None,
) -> bool:
    """An attempt of `job` ended with `reason` (`runner_lost`, `interrupted`): re-queue it
    when its `retry` allows another attempt (`retry_limit`) and nobody asked to stop it;
    else it fails with `reason`. False when the job changed meanwhile.

    Interruptions keep their log lines and the artifacts they synced (the next attempt gets
    them back at claim: `claims`); both kinds of re-queue count against one limit.
    """
    spec = JobSpec.model_validate(job.spec)
    done = attempts(history(job))
    limit = retry_limit(spec, reason)
    if done < limit and not job.stop_requested:
        note = f"{message}; re-queued (attempt {done + 2} of {limit + 1})"
        keep = reason is TerminationReason.INTERRUPTED
        return await requeue(session, job, now=now, reason=reason, message=note, keep_logs=keep)
    if done and done >= limit:
        message = f"{message}; no retry left ({done} of {limit} used)"
    return await set_status(
        session,
        job,
        JobStatus.FAILED,
        now=now,
        reason=reason,
        message=message,
        exit_code=exit_code,
    )


def set_committed(row: JobRow, key: str, value: Any) -> None:
    """Mirror a value written with a Core UPDATE on the loaded row, without dirtying it."""
    set_committed_value(row, key, value)


def history(row: JobRow | Row[Any]) -> list[StatusChange]:
    return [StatusChange.model_validate(item) for item in row.history]


def compute_timings(changes: list[StatusChange], now: datetime) -> JobTimings:
    """Seconds per phase from the status history; the current phase counts up to `now`.

    `queued` runs from the first entry to the first active (or terminal) status.
    """
    if not changes:
        return JobTimings()
    spans: dict[str, float] = {}
    start = changes[0].at
    queued_end: datetime | None = None
    for i, change in enumerate(changes):
        end = changes[i + 1].at if i + 1 < len(changes) else None
        if queued_end is None and (change.status.is_active() or change.status.is_finished()):
            queued_end = change.at
        if change.status.is_active():
            stop = end or now
            spans[change.status.value] = spans.get(change.status.value, 0.0) + _secs(
                change.at, stop
            )
    queued = _secs(start, queued_end or now)
    return JobTimings(queued=queued, **spans)


def _secs(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


# A finished job never changes (`set_status` refuses to move it, and every change bumps
# `version`): its model is kept, by id, version and runner name, so that listings of many
# finished runs (`dstack ps -a`) do not decode and validate each of them again on every
# request. The least recently listed go first, one at a time (emptying the whole cache at
# once freed thousands of models within one request). It is kept small: each of the
# collector's full collections walks every model kept, and with 4,096 jobs kept these took
# tens of milliseconds, several times per page deep in a listing. 1,024: two pages of 50
# runs of 10 jobs.
_FINISHED: OrderedDict[tuple[str, int, str | None], Job] = OrderedDict()
_FINISHED_KEPT = 1024
_HISTORIES = TypeAdapter(list[list[StatusChange]])
_JOB_LIST = TypeAdapter(list[Job])


def to_models(rows: Sequence[Row[*tuple[Any, ...]]], *, now: datetime) -> list[Job]:
    """The jobs of Core rows of the jobs table, their JSON columns as text, with the name
    of their runner (`runner_name`), in order. Those not kept are decoded and validated in
    one pass of pydantic over all of them (a listing page is hundreds of jobs: building
    them one model at a time was most of its time)."""
    jobs: list[Job | None] = []
    missing: list[Row[*tuple[Any, ...]]] = []
    for row in rows:
        job = None
        if row.finished_at is not None:
            key = (row.id, row.version, row.runner_name)
            job = _FINISHED.get(key)
            if job is not None:
                _FINISHED.move_to_end(key)
        if job is None:
            missing.append(row)
        jobs.append(job)
    if not missing:
        return cast(list[Job], jobs)
    built = iter(_build_models(missing, now))
    for index, row in enumerate(rows):
        if jobs[index] is None:
            job = jobs[index] = next(built)
            if row.finished_at is not None:
                _FINISHED[(row.id, row.version, row.runner_name)] = job
    while len(_FINISHED) > _FINISHED_KEPT:
        _FINISHED.popitem(last=False)
    return cast(list[Job], jobs)


def _build_models(rows: list[Row[*tuple[Any, ...]]], now: datetime) -> list[Job]:
    histories = _HISTORIES.validate_json("[" + ",".join(row.history for row in rows) + "]")
    fields = [
        _fields(row, changes, from_json, now) for row, changes in zip(rows, histories, strict=True)
    ]
    return _JOB_LIST.validate_python(fields)


def _fields(
    row: Any, changes: list[StatusChange], decode: Callable[[Any], Any], now: datetime
) -> dict[str, Any]:
    """A `Job`'s fields from a job's columns (`decode`d: JSON columns read as text) and its
    runner's name; its instance and cost are added apart (`instances.with_instance`)."""
    return {
        "id": row.id,
        "run_name": row.run_name,
        "index": row.index,
        "workflow_name": row.workflow_name,
        "spec": decode(row.spec),
        "deps": decode(row.deps),
        "status": row.status,
        "reason": row.reason or None,
        "message": row.message,
        "exit_code": row.exit_code,
        "runner_id": row.runner_id,
        "runner_name": row.runner_name,
        "gpu_indexes": decode(row.gpu_indexes),
        "host_ports": decode(row.host_ports),
        "apps_ready_at": row.apps_ready_at,
        "cache_key": row.cache_key,
        "reused_from": row.reused_from,
        "cache_reason": row.cache_reason,
        "history": changes,
        "timings": compute_timings(changes, row.finished_at or now),
        "submitted_at": row.submitted_at,
        "finished_at": row.finished_at,
        "attempt": attempts(changes),
    }


# --- a finished job's API JSON, kept ------------------------------------------------------
# A finished job's columns never change (`set_status` refuses to move it): the JSON its
# `Job` dumps to is written once, when it finishes (`jobs.api_json`), and listings splice
# it (`services/runs.py`) instead of decoding, validating and dumping each job again.
# Left out, and spliced in from what they are at each listing: what other rows say and may
# change afterwards — the runner's name (a runner registers again under another name, or
# is removed), the instance (its state moves on to `terminated`) and the cost (shown with
# the instance). Kept as four lines (compact JSON holds no raw newline): a mark of the
# `Job` schema and pydantic's version that wrote it (another is ignored: the job is built
# from its columns, as one finished before migration 0014 is), the fields before the
# runner's name, those after it up to the instance, and the seconds the job held its
# runner (what its cost counts). Stored zlib-compressed: a job's ~1.6 KB of JSON (its spec
# and history again) is ~0.7 KB, which also keeps a SQLite row under a page (whole, it
# spilled to an overflow page: +2.7 KB a job, now +0.7 KB), for ~7 µs a job to decompress
# on a listing. Levels 1 to 9 make 732 to 709 bytes in the same time: zlib's default.
_SHOWN = list(Job.model_fields)
_HEAD = set(_SHOWN[: _SHOWN.index("runner_name")])
_TAIL = set(_SHOWN[_SHOWN.index("runner_name") + 1 : _SHOWN.index("instance")])
# The columns a `Job` is built from, besides its runner's name.
_API_COLUMNS = (
    *("id", "run_name", "index", "workflow_name", "spec", "deps", "status", "reason"),
    *("message", "exit_code", "runner_id", "gpu_indexes", "host_ports", "apps_ready_at"),
    *("cache_key", "reused_from", "cache_reason", "history", "submitted_at", "finished_at"),
)
_LEVEL = 6


@functools.cache
def _schema_mark() -> str:
    schema = json.dumps(Job.model_json_schema(mode="serialization"), sort_keys=True)
    text = f"{pydantic_core.__version__}\n{schema}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def api_json(columns: Mapping[str, Any]) -> bytes:
    """What `jobs.api_json` keeps of a finished job whose columns (`_API_COLUMNS`, decoded,
    as `JobRow` holds them; one absent is None) are `columns`, `finished_at` among them."""
    row = SimpleNamespace(**{c: _as_read(columns.get(c)) for c in _API_COLUMNS}, runner_name=None)
    changes = [StatusChange.model_validate(change) for change in row.history]
    job = Job.model_validate(_fields(row, changes, _same, row.finished_at))
    head = job.model_dump_json(include=_HEAD)[1:-1]
    tail = job.model_dump_json(include=_TAIL)[1:-1]
    text = "\n".join((_schema_mark(), head, tail, repr(held_seconds(job.timings))))
    return zlib.compress(text.encode(), _LEVEL)


def row_api_json(row: JobRow) -> bytes | None:
    """`api_json` of a finished job's row made whole, not through `set_status` (an import);
    None without `finished_at` (its timings would count up to each reading's now)."""
    if row.finished_at is None:
        return None
    return api_json({c: getattr(row, c) for c in _API_COLUMNS})


def _as_read(value: Any) -> Any:
    """A column's value as the database gives it back (a time in UTC)."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _same(value: Any) -> Any:
    return value


class KeptJson(NamedTuple):
    """A finished job's kept JSON (`api_json`), in the parts a listing splices."""

    head: str
    tail: str
    held: float

    def job(self, runner_name: str, instance: str, cost: str) -> str:
        """The job's JSON, with its runner's name, instance and cost as JSON."""
        return (
            f'{{{self.head},"runner_name":{runner_name},{self.tail},'
            f'"instance":{instance},"cost":{cost}}}'
        )


def kept_json(data: bytes | None) -> KeptJson | None:
    """The parts of `jobs.api_json`; None when there is none, or one another schema wrote."""
    if not data:
        return None
    mark, head, tail, held = zlib.decompress(data).decode().split("\n")
    if mark != _schema_mark():
        return None
    return KeptJson(head, tail, float(held))


def attempts(changes: list[StatusChange]) -> int:
    """Re-queues so far that count against `JobSpec.retry`: each one is a `submitted` entry
    with reason `runner_lost` or `interrupted`."""
    submitted = JobStatus.SUBMITTED
    return sum(1 for c in changes if c.status is submitted and c.reason in RETRIED_REASONS)


def claim_requeues(changes: list[StatusChange]) -> int:
    """Re-queues of claims their runner never confirmed (`deadline_exceeded`): these do not
    count against `JobSpec.retry`, the job having never started."""
    return _requeues(changes, TerminationReason.DEADLINE_EXCEEDED)


def _requeues(changes: list[StatusChange], reason: TerminationReason) -> int:
    return sum(1 for c in changes if c.status is JobStatus.SUBMITTED and c.reason is reason)


async def report_status(
    ctx: ServerContext, *, job_id: str, update: JobStatusUpdate, runner_id: str
) -> None:
    """Apply runner `runner_id`'s report on its job.

    404 when the job does not exist; 403 (`check_holder`) when the runner does not hold it or
    it is final — except the runner's own final report sent again unchanged (its answer was
    lost on the way), which changes nothing. 409 when the job changed meanwhile. A runner
    reports only what it does: active or terminal statuses. A terminal report with reason
    `interrupted` (the runner's spot instance is being reclaimed) re-queues the job when its
    `retry` allows (`retry_or_fail`); its repeat, should the answer be lost, is refused (403:
    the job is no longer the runner's), which the runner takes as "forget it". `apps_ready` stamps
    `apps_ready_at` (once); it is ignored unless the job still has the status the report
    names: the report comes from a probe beside the job, and may arrive after the job moved on.
    """
    async with ctx.transaction() as session:
        await apply_report(ctx, session, job_id=job_id, update=update, runner_id=runner_id)


async def apply_report(
    ctx: ServerContext,
    session: AsyncSession,
    *,
    job_id: str,
    update: JobStatusUpdate,
    runner_id: str,
) -> None:
    """`report_status` within the caller's transaction (`claims.report_status` claims the
    runner's next job in the same one)."""
    if not (update.status.is_active() or update.status.is_finished()):
        raise InvalidRequestError(f"a runner cannot set a job to {update.status.value}")
    job = await require_job(session, job_id)
    if _repeated_final(job, runner_id, update):
        return
    check_holder(job, runner_id)
    if update.apps_ready and JobStatus(job.status) is not update.status:
        return
    if update.reason is TerminationReason.INTERRUPTED and update.status.is_finished():
        await _mark_interrupted(session, runner_id)
        applied = await retry_or_fail(
            session,
            job,
            now=ctx.clock(),
            reason=TerminationReason.INTERRUPTED,
            message=update.message or "the runner's instance is being reclaimed",
            exit_code=update.exit_code,
        )
        if not applied:
            raise ConflictError(f"job {job_id} changed meanwhile", hint="report again")
        return
    reason, message = update.reason or _default_reason(job, update), update.message
    if update.status in (JobStatus.STOPPED, JobStatus.ABORTED) and job.stop_requested:
        failure = await _failed_node(session, job)
        if failure is not None:  # stopped because another node of its gang failed
            reason, message = TerminationReason.NODE_FAILED, failure
    applied = await set_status(
        session,
        job,
        update.status,
        now=ctx.clock(),
        reason=reason,
        message=message,
        exit_code=update.exit_code,
        **_reported_fields(job, update, ctx.clock()),
    )
    if not applied:
        raise ConflictError(f"job {job_id} changed meanwhile", hint="report again")


async def _mark_interrupted(session: AsyncSession, runner_id: str) -> None:
    """The runner's machine is going away: it gets no more jobs (`claims.try_claim`), not
    even the one it hands back now, which its claim in flight would otherwise get."""
    runner = await get_row(session, RunnerRow, runner_id)
    if runner is not None and runner.status != RunnerStatus.INTERRUPTED.value:
        runner.status = RunnerStatus.INTERRUPTED.value


def _reported_fields(job: JobRow, update: JobStatusUpdate, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if update.host_ports is not None:
        fields["host_ports"] = update.host_ports
    if update.apps_ready and job.apps_ready_at is None:
        fields["apps_ready_at"] = now
    return fields


def _repeated_final(job: JobRow, runner_id: str, update: JobStatusUpdate) -> bool:
    """Whether `update` is the final report the job's runner already made (a retry)."""
    return (
        job.runner_id == runner_id
        and JobStatus(job.status).is_finished()
        and update.status.value == job.status
        and update.exit_code == job.exit_code
    )


async def require_job(session: AsyncSession, job_id: str) -> JobRow:
    """The job, or `NotFoundError` (404)."""
    job = await get_row(session, JobRow, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found", hint="forget it: it was deleted")
    return job


async def require_held_job(session: AsyncSession, job_id: str, runner_id: str) -> JobRow:
    """The job, when runner `runner_id` holds it and it is not final: 404 or 403 otherwise."""
    job = await require_job(session, job_id)
    check_holder(job, runner_id)
    return job


def check_holder(job: JobRow, runner_id: str) -> None:
    """`Forbidden` (403) unless runner `runner_id` holds `job` and the job is not final.

    Every runner report about a job (status, logs, manifests, caches, clone credentials)
    passes here: a runner touches only the jobs it holds, only while they are not final.
    """
    if job.runner_id != runner_id:
        raise Forbidden(f"job {job.id} is not held by this runner; forget it")
    status = JobStatus(job.status)
    if status.is_finished():
        raise Forbidden(f"job {job.id} is already {status.value}; forget it")


def _default_reason(job: JobRow, update: JobStatusUpdate) -> TerminationReason | None:
    if update.status is JobStatus.DONE:
        return TerminationReason.DONE
    if update.status is JobStatus.FAILED and update.exit_code is not None:
        return TerminationReason.EXIT_CODE
    if update.status is JobStatus.STOPPED:
        return TerminationReason.STOPPED_BY_USER if job.stop_requested else None
    if update.status is JobStatus.ABORTED:
        return TerminationReason.ABORTED_BY_USER if job.stop_requested else None
    return None
