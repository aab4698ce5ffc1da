"""Runs: submit, list, show, stop, delete. A run's status is derived from its jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import anyio
from pydantic import TypeAdapter
from sqlalchemy import JSON, Row, Text, bindparam, cast, delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dstack.errors import ConflictError, MissingBlobsError, NotFoundError
from dstack.models.artifacts import JobArtifacts
from dstack.models.job import (
    Job,
    JobSpec,
    JobStatus,
    StatusChange,
    TerminationReason,
    gang_indexes,
)
from dstack.models.protocol import JobSubmission, PlanResponse, SubmitRunRequest
from dstack.models.repo import RepoRef
from dstack.models.resources import HostResources
from dstack.models.run import Run, run_cost, run_status, status_of, total_cost
from dstack.models.runner import RunnerStatus
from dstack.models.runs_api import RunDeleted
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import (
    UNFINISHED_JOB,
    JobRow,
    LogRow,
    ManifestRow,
    RunnerRow,
    RunRow,
    TagRow,
)
from dstack.server.errors import InvalidRequestError
from dstack.server.services import caching, dependencies, gc, instances, secrets
from dstack.server.services import jobs as job_service
from dstack.server.services.artifacts import job_artifacts, missing_in
from dstack.server.services.matching import fits_ever, labels_match
from dstack.server.services.names import random_prefix, run_name

_NAME_ATTEMPTS = 5
_RUNS = RunRow.__table__
_JOBS = JobRow.__table__
# Listings' statements are built once (building one and its cache key costs more than
# running it on SQLite); values go in as bound parameters.
# The columns a `Run` shows: a run's submission (its whole request again) and a job's cache
# inputs and external artifacts are not, and decoding their JSON was a fifth of a listing;
# nor are a job's other columns for the server's own work.
_RUN_SHOWN = [column for column in _RUNS.c if column.name != "submission"]
_JOB_UNSHOWN = (
    "cache_inputs",
    "external_artifacts",
    "reused_job_id",
    "stop_requested",
    "status_at",
    "api_json",
)
# A job's JSON columns come as their text, decoded only for the jobs not kept already
# (`jobs.to_models`): a page of kept jobs decoded them for nothing.
_JOB_SHOWN = [
    cast(c, Text).label(c.name) if isinstance(c.type, JSON) else c
    for c in _JOBS.c
    if c.name not in _JOB_UNSHOWN
]
_RUNS_NEWEST_FIRST = select(*_RUN_SHOWN).order_by(_RUNS.c.submitted_at.desc(), _RUNS.c.name.desc())
_RUN_NAMED = select(*_RUN_SHOWN).where(_RUNS.c.name == bindparam("name"))
_RUNNERS = RunnerRow.__table__


def _jobs_of_runs(columns: list[Any]) -> Any:
    return (
        select(*columns, _RUNNERS.c.name.label("runner_name"))
        .outerjoin(_RUNNERS, _RUNNERS.c.id == _JOBS.c.runner_id)
        .where(_JOBS.c.run_name.in_(bindparam("names", expanding=True)))
        .order_by(_JOBS.c.index)
    )


_JOBS_OF_RUNS = _jobs_of_runs(_JOB_SHOWN)
# For the API's JSON (`_to_json`): the finished jobs' kept JSON and what is spliced into it;
# the other jobs' columns are read next, by id.
_JOBS_OF_RUNS_KEPT = _jobs_of_runs(
    [_JOBS.c[c] for c in ("id", "run_name", "index", "status", "runner_id", "api_json")]
)
_JOBS_BY_ID = (
    select(*_JOB_SHOWN, _RUNNERS.c.name.label("runner_name"))
    .outerjoin(_RUNNERS, _RUNNERS.c.id == _JOBS.c.runner_id)
    .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)))
)
_RUN_SPLICED = {"jobs", "cost"}
_NAME_JSON: TypeAdapter[str | None] = TypeAdapter(str | None)
_COST_JSON: TypeAdapter[float | None] = TypeAdapter(float | None)


async def submit_run(
    ctx: ServerContext,
    *,
    request: SubmitRunRequest,
    user: str | None = None,
    pinned: list[list[dependencies.ResolvedDep]] | None = None,
    rerun_of: str | None = None,
) -> Run:
    """Store a run and its jobs under a fresh name, submitted by `user` (default: the
    admin's name); return it. A job referring to a secret that does not exist is refused.

    In the same transaction: external deps are resolved (a missing tag or run raises
    `NotFoundError` and nothing is created), each job gets its cache key, and jobs whose
    results can be reused are finished at once as `done`/`cached` — so a fully cached run
    is done when this returns.

    The run keeps the request and what its external deps resolved to (`RunRow.submission`)
    for a re-run, which passes them back as `pinned` (deps not resolved again) and
    `rerun_of` (the run it repeats).
    """
    _check_deps(request)
    await _require_code(ctx, request.repo)
    specs = [job.spec for job in request.jobs]
    await secrets.check_references(ctx, specs, repo_id=request.repo.repo_id)
    for attempt in range(_NAME_ATTEMPTS):
        try:
            async with ctx.transaction() as session:
                name = await _insert_run(ctx, session, request, user, pinned, rerun_of)
            return await get_run(ctx, name=name)
        except IntegrityError:
            # Another submit took the same name between our count and insert: draw again.
            if attempt == _NAME_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _require_code(ctx: ServerContext, repo: RepoRef) -> None:
    """`MissingBlobsError` when the store lacks the run's bundle or diff: runners could not
    fetch its code. Clients may submit without checking first, and upload on this error."""
    digests = [d for d in (repo.bundle_digest, repo.diff_digest) if d is not None]
    missing = await missing_in(ctx.blobs, digests)
    if missing:
        raise MissingBlobsError(
            f"the code of this run is not on the server (blob {', '.join(missing)})",
            hint="upload the bundle and the diff, then submit again (`dstack run` does)",
        )


async def plan_run(ctx: ServerContext, *, request: SubmitRunRequest) -> PlanResponse:
    """What `submit_run` would do with each job — reused (from which run) or why it runs —
    without creating anything."""
    _check_deps(request)
    async with ctx.transaction() as session:
        externals = await dependencies.resolve_request(session, request)
        decisions = await caching.decide(session, request, externals)
        hosts = await _registered_hosts(session)
    explained = []
    for job, decision in zip(request.jobs, decisions, strict=True):
        explanation = decision.explanation()
        if decision.origin is None:
            explanation.runners = _fitting(job.spec, hosts)
        explained.append(explanation)
    return PlanResponse(jobs=explained)


async def _registered_hosts(
    session: AsyncSession,
) -> list[tuple[str, HostResources, dict[str, str]]]:
    query = select(RunnerRow.name, RunnerRow.resources, RunnerRow.labels).where(
        RunnerRow.status != RunnerStatus.INTERRUPTED.value
    )
    rows = await session.execute(query.order_by(RunnerRow.name))
    return [(n, HostResources.model_validate(r), dict(lab)) for n, r, lab in rows]


def _fitting(spec: JobSpec, hosts: list[tuple[str, HostResources, dict[str, str]]]) -> list[str]:
    """The runners `spec` could run on (ever: their whole machine), by name."""
    return [
        name
        for name, host, labels in hosts
        if labels_match(spec.labels, labels) and fits_ever(spec.resources, host)
    ]


def _check_deps(request: SubmitRunRequest) -> None:
    for index, job in enumerate(request.jobs):
        bad = [d for d in job.deps if not 0 <= d < index]
        if bad:
            raise InvalidRequestError(
                f"job {index} depends on job(s) {bad}, which do not come before it",
                hint="list jobs in dependency order",
            )
    _check_gangs(request)


def _check_gangs(request: SubmitRunRequest) -> None:
    """The nodes of a multi-node job come next to each other, ranks 0..N-1, with the same
    workflow, resources and dependencies (`gang_indexes` relies on it)."""
    jobs = request.jobs
    for index, job in enumerate(jobs):
        spec = job.spec
        nodes = spec.resources.nodes
        gang = gang_indexes(index, spec)
        first = jobs[gang.start] if 0 <= gang.start < len(jobs) else None
        if nodes <= 1 and spec.node_rank == 0:
            continue
        ok = (
            spec.node_rank < nodes
            and first is not None
            and gang.stop <= len(jobs)
            and all(
                jobs[i].spec.node_rank == i - gang.start
                and jobs[i].spec.resources == spec.resources
                and jobs[i].workflow_name == job.workflow_name
                and jobs[i].deps == job.deps
                for i in gang
            )
        )
        if not ok:
            raise InvalidRequestError(
                f"job {index} is node {spec.node_rank} of {nodes}, but its run does not list "
                f"its {nodes} nodes next to each other (ranks 0..{nodes - 1}, same workflow, "
                "resources and dependencies)",
                hint="plan the run with `dstack run`, which lists them so",
            )


async def _insert_run(
    ctx: ServerContext,
    session: AsyncSession,
    request: SubmitRunRequest,
    user: str | None,
    pinned: list[list[dependencies.ResolvedDep]] | None,
    rerun_of: str | None,
) -> str:
    if pinned is None:
        externals = await dependencies.resolve_request(session, request)
    else:
        externals = pinned
    decisions = await caching.decide(session, request, externals)
    now = ctx.clock()
    name = await insert_run_row(
        ctx,
        session,
        repo=request.repo,
        workflow_name=request.workflow_name,
        provider=request.provider,
        args=list(request.args),
        variables=dict(request.variables),
        tag=request.tag,
        user=user,
        submission=_submission(request, externals, rerun_of),
    )
    rows = [
        _new_job(name, index, job, now, decisions[index], externals[index])
        for index, job in enumerate(request.jobs)
    ]
    session.add_all(rows)
    await session.flush()
    for row, decision in zip(rows, decisions, strict=True):
        if decision.origin is not None:
            await caching.apply_hit(session, row, decision, now)
    mark_changed(session, work=True)
    return name


async def insert_run_row(
    ctx: ServerContext,
    session: AsyncSession,
    *,
    repo: RepoRef,
    workflow_name: str | None,
    provider: str | None,
    args: list[str],
    variables: dict[str, str],
    tag: str | None,
    user: str | None = None,
    submission: dict[str, Any] | None = None,
) -> str:
    """Add a run under a fresh name (flushed); return the name. A name taken concurrently
    surfaces as `IntegrityError` at commit: the caller draws again."""
    prefix = random_prefix()
    counter = await session.scalar(
        select(func.coalesce(func.max(RunRow.name_counter), 0)).where(RunRow.name_prefix == prefix)
    )
    name = run_name(prefix, int(counter or 0) + 1)
    session.add(
        RunRow(
            name=name,
            name_prefix=prefix,
            name_counter=int(counter or 0) + 1,
            repo_id=repo.repo_id,
            repo=repo.model_dump(mode="json"),
            workflow_name=workflow_name,
            provider=provider,
            args=args,
            variables=variables,
            tag=tag,
            user=user or ctx.settings.user,
            submitted_at=ctx.clock(),
            submission=submission,
        )
    )
    await session.flush()
    return name


def _submission(
    request: SubmitRunRequest,
    externals: list[list[dependencies.ResolvedDep]],
    rerun_of: str | None,
) -> dict[str, Any]:
    """What a re-run needs: the request, and per job the run each external dep resolved to
    with how many of the job's `external_artifacts` it gave (they are stored in order)."""
    return {
        "request": request.model_dump(mode="json"),
        "externals": [
            [{"ref": str(r.ref), "run_name": r.run_name, "count": len(r.artifacts)} for r in job]
            for job in externals
        ],
        "rerun_of": rerun_of,
    }


def _new_job(
    run: str,
    index: int,
    job: JobSubmission,
    now: datetime,
    decision: caching.Decision,
    externals: list[dependencies.ResolvedDep],
) -> JobRow:
    row = new_job_row(run, index, job.workflow_name, job.spec, job.deps, now)
    row.cache_key = decision.cache_key
    row.cache_inputs = decision.inputs.model_dump(mode="json")
    row.external_artifacts = [
        a.model_dump(mode="json") for resolved in externals for a in resolved.artifacts
    ]
    row.reused_from = decision.origin_run
    row.reused_job_id = decision.origin_job
    row.cache_reason = decision.reason
    return row


def new_job_row(
    run: str, index: int, workflow_name: str | None, spec: JobSpec, deps: list[int], now: datetime
) -> JobRow:
    """A `submitted` job row."""
    first = StatusChange(status=JobStatus.SUBMITTED, at=now)
    return JobRow(
        id=uuid.uuid4().hex,
        run_name=run,
        index=index,
        workflow_name=workflow_name,
        spec=spec.model_dump(mode="json"),
        deps=list(deps),
        status=JobStatus.SUBMITTED.value,
        gpu_indexes=[],
        host_ports=[],
        history=[first.model_dump(mode="json")],
        version=0,
        submitted_at=now,
        status_at=now,
    )


async def get_run(ctx: ServerContext, *, name: str) -> Run:
    async with ctx.connect() as connection:
        return await read_run(ctx, connection, name)


async def get_run_json(ctx: ServerContext, *, name: str) -> str:
    """`get_run` as the API's JSON (`_to_json`)."""
    async with ctx.connect() as connection:
        row = await _run_row(connection, name)
        jobs = await _jobs_of(connection, [row], _JOBS_OF_RUNS_KEPT)
        return (await _to_json(ctx, connection, [row], jobs))[1:-1]


async def read_run(ctx: ServerContext, connection: AsyncConnection, name: str) -> Run:
    """The run `name` as of `connection` (`NotFoundError` when it does not exist)."""
    row = await _run_row(connection, name)
    jobs = await _jobs_of(connection, [row], _JOBS_OF_RUNS)
    runs = await _to_models(ctx, connection, [row], jobs)
    return runs[0]


async def _run_row(connection: AsyncConnection, name: str) -> Row[Any]:
    row = (await connection.execute(_RUN_NAMED, {"name": name})).first()
    if row is None:
        raise NotFoundError(f"run '{name}' not found", hint="see `dstack ps -a`")
    return row


async def list_runs(
    ctx: ServerContext,
    *,
    all: bool = False,
    repo_id: str | None = None,
    repos: list[str] | None = None,
) -> list[Run]:
    """Runs, newest first, of `repos` only when given. Without `all`: every unfinished run
    plus the newest `settings.finished_runs_listed` finished ones.

    Without `all` the rows read do not grow with the history (`dstack ps` on a server of
    100,000 runs): the runs with an unfinished job (`ix_jobs_unfinished`, a partial index)
    and the newest runs, as many as the finished ones listed plus the unfinished ones
    (`ix_runs_repo_submitted_name`, `ix_runs_submitted_name`): among those are the newest
    finished ones."""
    async with ctx.connect() as connection:
        rows, jobs = await _listed(ctx, connection, _JOBS_OF_RUNS, all, repo_id, repos)
        return await _to_models(ctx, connection, rows, jobs)


async def list_runs_json(
    ctx: ServerContext,
    *,
    all: bool = False,
    repo_id: str | None = None,
    repos: list[str] | None = None,
) -> str:
    """`list_runs` as the API's JSON (`_to_json`)."""
    async with ctx.connect() as connection:
        rows, jobs = await _listed(ctx, connection, _JOBS_OF_RUNS_KEPT, all, repo_id, repos)
        return await _to_json(ctx, connection, rows, jobs)


async def _listed(
    ctx: ServerContext,
    connection: AsyncConnection,
    jobs_query: Any,
    all: bool,
    repo_id: str | None,
    repos: list[str] | None,
) -> tuple[list[Row[Any]], dict[str, list[Row[Any]]]]:
    """The rows of the runs `list_runs` lists, and their jobs' rows by run."""
    query = _RUNS_NEWEST_FIRST
    if repo_id is not None:
        query = query.where(_RUNS.c.repo_id == repo_id)
    if repos is not None:
        query = query.where(_RUNS.c.repo_id.in_(repos))
    limit = ctx.settings.finished_runs_listed
    if all:
        rows = list((await connection.execute(query)).all())
        return rows, await _jobs_of(connection, rows, jobs_query)
    rows = await _recent_rows(connection, query, limit)
    jobs = await _jobs_of(connection, rows, jobs_query)
    finished = {
        row.name
        for row in rows
        if status_of([JobStatus(j.status) for j in jobs.get(row.name, [])]).is_finished()
    }
    keep = set([row.name for row in rows if row.name in finished][:limit])
    return [r for r in rows if r.name not in finished or r.name in keep], jobs


# Not DISTINCT: SQLite would then walk `ix_jobs_run_name` over every job instead.
_UNFINISHED_RUNS = select(_JOBS.c.run_name).where(UNFINISHED_JOB)


async def _recent_rows(connection: AsyncConnection, query: Any, finished: int) -> list[Row[Any]]:
    """The rows of `query` (runs newest first) with an unfinished job, and the newest
    `finished` + that many more: the newest `finished` finished runs are among them."""
    active = set((await connection.scalars(_UNFINISHED_RUNS)).all())
    newest = (await connection.execute(query.limit(finished + len(active)))).all()
    missing = active.difference(row.name for row in newest)
    if not missing:
        return list(newest)
    older = (await connection.execute(query.where(_RUNS.c.name.in_(missing)))).all()
    return sorted([*newest, *older], key=lambda row: (row.submitted_at, row.name), reverse=True)


async def list_runs_page(
    ctx: ServerContext,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
    repos: list[str] | None = None,
    repo_id: str | None = None,
    workflow: str | None = None,
    user: str | None = None,
) -> list[Run]:
    """At most `limit` runs, newest first, after the key `before` (submitted_at, name) of the
    last run of the previous page: keyset pagination on `ix_runs_submitted_name` (or
    `ix_runs_repo_submitted_name`), as fast on the thousandth page as on the first."""
    async with ctx.connect() as connection:
        rows = await _page_rows(connection, limit, before, repos, repo_id, workflow, user)
        jobs = await _jobs_of(connection, rows, _JOBS_OF_RUNS)
        return await _to_models(ctx, connection, rows, jobs)


async def list_runs_page_json(
    ctx: ServerContext,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
    repos: list[str] | None = None,
    repo_id: str | None = None,
) -> str:
    """`list_runs_page` as the API's JSON (`_to_json`)."""
    async with ctx.connect() as connection:
        rows = await _page_rows(connection, limit, before, repos, repo_id, None, None)
        jobs = await _jobs_of(connection, rows, _JOBS_OF_RUNS_KEPT)
        return await _to_json(ctx, connection, rows, jobs)


async def _page_rows(
    connection: AsyncConnection,
    limit: int,
    before: tuple[datetime, str] | None,
    repos: list[str] | None,
    repo_id: str | None,
    workflow: str | None,
    user: str | None,
) -> list[Row[Any]]:
    query = _RUNS_NEWEST_FIRST
    if before is not None:
        key = tuple_(_RUNS.c.submitted_at, _RUNS.c.name)
        query = query.where(
            key
            < tuple_(
                bindparam("before_at", type_=_RUNS.c.submitted_at.type),
                bindparam("before_name", type_=_RUNS.c.name.type),
            )
        )
    if repos is not None:
        query = query.where(_RUNS.c.repo_id.in_(repos))
    for column, value in ((_RUNS.c.repo_id, repo_id), (_RUNS.c.workflow_name, workflow)):
        if value is not None:
            query = query.where(column == value)
    if user is not None:
        query = query.where(_RUNS.c.user == user)
    params: dict[str, Any] = {}
    if before is not None:
        params = {"before_at": before[0], "before_name": before[1]}
    return list((await connection.execute(query.limit(limit), params)).all())


async def _jobs_of(
    connection: AsyncConnection, rows: Sequence[Row[Any]], query: Any
) -> dict[str, list[Row[Any]]]:
    """The rows of the jobs of the runs of `rows` (`_JOBS_OF_RUNS…`), by run, in order."""
    names = [r.name for r in rows]
    found: dict[str, list[Row[Any]]] = {}
    if names:
        for job in (await connection.execute(query, {"names": names})).all():
            found.setdefault(job.run_name, []).append(job)
    return found


async def _to_models(
    ctx: ServerContext,
    connection: AsyncConnection,
    rows: Sequence[Row[Any]],
    jobs: dict[str, list[Row[Any]]],
) -> list[Run]:
    """Runs from rows of the runs table, with their jobs' rows (Core rows: read once, they
    need no ORM objects)."""
    job_rows = [j for row in rows for j in jobs.get(row.name, [])]
    found = await instances.of_jobs(connection, job_rows)
    models = iter(job_service.to_models(job_rows, now=ctx.clock()))
    result = []
    for row in rows:
        run_jobs = [
            instances.with_instance(next(models), found.get(j.id)) for j in jobs.get(row.name, [])
        ]
        result.append(_run(row, run_jobs, run_status(run_jobs), run_cost(run_jobs)))
    return result


def _run(row: Row[Any], jobs: list[Job], status: JobStatus, cost: float | None) -> Run:
    return Run(
        name=row.name,
        repo=RepoRef.model_validate(row.repo),
        workflow_name=row.workflow_name,
        provider=row.provider,
        args=list(row.args),
        variables=dict(row.variables),
        tag=row.tag,
        user=row.user,
        submitted_at=row.submitted_at,
        status=status,
        jobs=jobs,
        cost=cost,
    )


async def _to_json(
    ctx: ServerContext,
    connection: AsyncConnection,
    rows: Sequence[Row[Any]],
    jobs: dict[str, list[Row[Any]]],
) -> str:
    """`_to_models` dumped as a JSON list, the same text, without building the finished
    jobs that kept their JSON (`jobs.api_json`): their kept JSON is spliced, with what may
    have changed since they finished (runner's name, instance, cost) from this reading.
    The others (unfinished, or finished before migration 0014) are built as models."""
    job_rows = [j for row in rows for j in jobs.get(row.name, [])]
    found = await instances.of_jobs(connection, job_rows)
    kept = {j.id: k for j in job_rows if (k := job_service.kept_json(j.api_json)) is not None}
    models: dict[str, Job] = {}
    others = [j.id for j in job_rows if j.id not in kept]
    if others:
        read = (await connection.execute(_JOBS_BY_ID, {"ids": others})).all()
        for job in job_service.to_models(read, now=ctx.clock()):
            models[job.id] = instances.with_instance(job, found.get(job.id))
    # Runners' names and instances as JSON, once each.
    names: dict[str | None, str] = {}
    shown: dict[str | None, str] = {None: "null"}
    runs = []
    for row in rows:
        texts: list[str] = []
        statuses: list[JobStatus] = []
        costs: list[float | None] = []
        for j in jobs.get(row.name, []):
            part = kept.get(j.id)
            if part is None:
                model = models.get(j.id)
                if model is None:  # deleted with its run since the first read (PostgreSQL)
                    continue
                texts.append(model.model_dump_json())
                statuses.append(model.status)
                costs.append(model.cost)
                continue
            instance = found.get(j.id)
            cost = None
            if instance is not None and j.runner_id is not None:
                cost = instances.held_cost(instance, part.held)
            name = j.runner_name
            if name not in names:
                names[name] = _NAME_JSON.dump_json(name).decode()
            if instance is not None and instance.id not in shown:
                shown[instance.id] = instances.job_instance(instance).model_dump_json()
            cost_json = "null" if cost is None else _COST_JSON.dump_json(cost).decode()
            texts.append(part.job(names[name], shown[instance and instance.id], cost_json))
            statuses.append(JobStatus(j.status))
            costs.append(cost)
        head = _run(row, [], status_of(statuses), None).model_dump_json(exclude=_RUN_SPLICED)
        run_cost_json = _COST_JSON.dump_json(total_cost(costs)).decode()
        runs.append(f'{head[:-1]},"jobs":[{",".join(texts)}],"cost":{run_cost_json}}}')
    return f"[{','.join(runs)}]"


async def stop_run(ctx: ServerContext, *, name: str, abort: bool = False) -> Run:
    """Jobs not started end at once (stopped/aborted by user); started ones are asked to stop
    through their runner's next heartbeat, and the runner reports how they ended."""
    async with ctx.transaction() as session:
        await _require_run(session, name)
        rows = (await session.scalars(select(JobRow).where(JobRow.run_name == name))).all()
        for job in rows:
            await _stop_job(ctx, session, job, abort)
    return await get_run(ctx, name=name)


async def _stop_job(ctx: ServerContext, session: AsyncSession, job: JobRow, abort: bool) -> None:
    status = JobStatus(job.status)
    if status.is_finished():
        return
    if status.is_active():
        if job.stop_requested != "abort":
            job.stop_requested = "abort" if abort else "stop"
            mark_changed(session)
        return
    final = JobStatus.ABORTED if abort else JobStatus.STOPPED
    reason = TerminationReason.ABORTED_BY_USER if abort else TerminationReason.STOPPED_BY_USER
    await job_service.set_status(session, job, final, now=ctx.clock(), reason=reason)


async def delete_run(ctx: ServerContext, *, name: str) -> RunDeleted:
    """Remove a finished run with its jobs, logs and manifests, then the blobs nothing
    references any more. 409 while it is unfinished, or while a tag points to it (a tag
    promises its artifacts: delete the tag first).

    The answer counts the bytes of the blobs the run alone held (a blob another run, cache or
    tag still names is not counted): garbage collection deletes them once they are older than
    its grace period, at once for those that already are."""
    run = await get_run(ctx, name=name)
    if not run.status.is_finished():
        raise ConflictError(
            f"run '{name}' is {run.status.value}", hint=f"stop it first: dstack stop {name}"
        )
    async with ctx.transaction() as session:
        tags = sorted(
            (await session.scalars(select(TagRow.name).where(TagRow.run_name == name))).all()
        )
        if tags:
            raise ConflictError(
                f"run '{name}' is tagged {', '.join(repr(t) for t in tags)}",
                hint=f"delete the tag first: dstack tags delete {tags[0]}",
            )
        held = await _held_blobs(session, name)
        job_ids = select(JobRow.id).where(JobRow.run_name == name)
        await session.execute(delete(LogRow).where(LogRow.job_id.in_(job_ids)))
        await session.execute(delete(ManifestRow).where(ManifestRow.job_id.in_(job_ids)))
        await session.execute(delete(JobRow).where(JobRow.run_name == name))
        await session.execute(delete(RunRow).where(RunRow.name == name))
        referenced = await gc.referenced_digests(session)
        mark_changed(session)
    released = {digest: size for digest, size in held.items() if digest not in referenced}
    freed = await anyio.to_thread.run_sync(_blob_bytes, ctx, released)
    await gc.collect(ctx)
    return RunDeleted(name=name, freed_bytes=freed, gc_grace_seconds=ctx.settings.gc_grace_seconds)


async def _held_blobs(session: AsyncSession, run_name: str) -> dict[str, int | None]:
    """The blobs a run names, with their sizes where its manifests tell them (the code's
    bundle and diff: None, the store is asked)."""
    held: dict[str, int | None] = {}
    job_ids = select(JobRow.id).where(JobRow.run_name == run_name)
    manifests = select(ManifestRow.manifest).where(ManifestRow.job_id.in_(job_ids))
    for (manifest,) in await session.execute(manifests):
        for entry in manifest.get("files", []):
            held[entry["digest"]] = int(entry.get("size", 0))
    repo = await session.scalar(select(RunRow.repo).where(RunRow.name == run_name))
    for key in ("bundle_digest", "diff_digest"):
        digest = (repo or {}).get(key)
        if digest:
            held.setdefault(digest, None)
    return held


def _blob_bytes(ctx: ServerContext, blobs: dict[str, int | None]) -> int:
    total = 0
    for digest, size in blobs.items():
        if size is None:
            try:
                size = ctx.blobs.size(digest)
            except NotFoundError:
                size = 0
        total += size
    return total


async def run_artifacts(ctx: ServerContext, *, run_name: str) -> list[JobArtifacts]:
    """`GET /api/runs/{name}/artifacts`: per job (by index), what it produced or reuses."""
    async with ctx.transaction() as session:
        await require_run(session, run_name)
        jobs = (
            await session.scalars(
                select(JobRow).where(JobRow.run_name == run_name).order_by(JobRow.index)
            )
        ).all()
        return await job_artifacts(session, jobs)


async def require_run(session: AsyncSession, name: str) -> RunRow:
    """The run's row; `NotFoundError` when there is none."""
    return await _require_run(session, name)


async def _require_run(session: AsyncSession, name: str) -> RunRow:
    row = await session.get(RunRow, name)
    if row is None:
        raise NotFoundError(f"run '{name}' not found", hint="see `dstack ps -a`")
    return row
