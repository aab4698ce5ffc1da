"""Imported runs: a finished run copied from another server (`dstack push` / `dstack pull`).

The run keeps its name and repository, its jobs keep their ids, histories and results; their
manifests are stored as they were. The blobs are uploaded beforehand, so an import only
writes rows.

What the server can decide, it decides, whatever the request says: the run is the importing
user's (the router checked that they may see its repository), every job belongs to the run
itself, and no job carries a cache key. A key sent by a client is a claim the server cannot
check, and a job holding one would be reused by the next run computing that key; so an
imported run is never a cache hit (its tags and `X:latest` still reach it).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import ConflictError
from dstack.models.artifacts import JobArtifacts, Manifest
from dstack.models.job import Job
from dstack.models.protocol import ImportRunRequest
from dstack.models.run import Run
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import JobRow, RunRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services import runs as run_service
from dstack.server.services.artifacts import put_manifest, require_blobs
from dstack.server.services.jobs import row_api_json


async def import_run(ctx: ServerContext, *, request: ImportRunRequest, user: str) -> Run:
    """Store `request.run` with its jobs and manifests, imported by `user`; return it as this
    server sees it.

    Importing the same run again (same name, repository, importer and job ids) changes
    nothing, so an interrupted copy resumes. 409 when another run has that name or a job id
    exists already; 400 when the run is not finished, its jobs' ids or indexes repeat, an
    artifact names a job the run does not have, or (`StorageError`) blobs are missing —
    naming them. Nothing is created on error.
    """
    run = request.run
    manifests = manifests_by_job(run, request.artifacts)
    await require_blobs(
        ctx.blobs, [f.digest for ms in manifests.values() for m in ms for f in m.files]
    )
    try:
        async with ctx.transaction() as session:
            existing = await session.get(RunRow, run.name)
            if existing is not None:
                await _check_same(session, existing, run, user)
            else:
                await _check_new_ids(session, run)
                await _insert(ctx, session, run, manifests, user)
    except IntegrityError:
        # Another import took the name or an id between the checks and the commit.
        raise _taken(run.name) from None
    return await run_service.get_run(ctx, name=run.name)


def manifests_by_job(run: Run, artifacts: list[JobArtifacts]) -> dict[str, list[Manifest]]:
    """job id → manifests to store, checked against the run's jobs."""
    unfinished = [j.index for j in run.jobs if not j.status.is_finished()]
    if not run.jobs or unfinished:
        raise InvalidRequestError(
            f"run {run.name} is not finished (jobs {unfinished} still active)",
            hint="wait until it finishes, or stop it, then copy it",
        )
    ids = {j.id for j in run.jobs}
    if len(ids) != len(run.jobs) or sorted(j.index for j in run.jobs) != list(range(len(run.jobs))):
        raise InvalidRequestError(
            f"the jobs of run {run.name} repeat an id or an index",
            hint="send each job once, indexed from 0",
        )
    result: dict[str, list[Manifest]] = {}
    for item in artifacts:
        if item.job_id not in ids:
            raise InvalidRequestError(
                f"artifacts name job {item.job_id}, which run {run.name} does not have",
                hint="send the artifacts keyed by the run's own job ids",
            )
        result.setdefault(item.job_id, []).extend(item.manifests)
    return result


async def _check_same(session: AsyncSession, existing: RunRow, run: Run, user: str) -> None:
    """An earlier import of this very run by the same user: nothing to do. Anything else
    with that name is another run."""
    stored = set(
        (await session.scalars(select(JobRow.id).where(JobRow.run_name == run.name))).all()
    )
    same = existing.repo_id == run.repo.repo_id and existing.user == user
    if not same or stored != {j.id for j in run.jobs}:
        raise _taken(run.name)


async def _check_new_ids(session: AsyncSession, run: Run) -> None:
    ids = [j.id for j in run.jobs]
    taken = (await session.scalars(select(JobRow.id).where(JobRow.id.in_(ids)))).first()
    if taken is not None:
        raise ConflictError(
            f"a job with id {taken} already exists here",
            hint=f"run {run.name} was copied here before under another name: use that one",
        )


def _taken(name: str) -> ConflictError:
    return ConflictError(
        f"a different run named {name} already exists here",
        hint="remove it (`dstack rm`) or leave this run where it is",
    )


async def _insert(
    ctx: ServerContext,
    session: AsyncSession,
    run: Run,
    manifests: dict[str, list[Manifest]],
    user: str,
) -> None:
    prefix, counter = split_name(run.name)
    session.add(
        RunRow(
            name=run.name,
            name_prefix=prefix,
            name_counter=counter,
            repo_id=run.repo.repo_id,
            repo=run.repo.model_dump(mode="json"),
            workflow_name=run.workflow_name,
            provider=run.provider,
            args=list(run.args),
            variables=dict(run.variables),
            tag=run.tag,
            user=user,
            submitted_at=run.submitted_at,
        )
    )
    await session.flush()
    for job in run.jobs:
        session.add(_job_row(job, run.name))
    await session.flush()
    now = ctx.clock()
    for job_id, items in manifests.items():
        for manifest in items:
            await put_manifest(session, job_id, manifest, now)
    mark_changed(session)


def _job_row(job: Job, run_name: str) -> JobRow:
    """A finished job as it was, in run `run_name`; it holds no runner and no cache key
    here."""
    row = JobRow(
        id=job.id,
        run_name=run_name,
        index=job.index,
        workflow_name=job.workflow_name,
        spec=job.spec.model_dump(mode="json"),
        deps=list(job.deps),
        status=job.status.value,
        reason=job.reason.value if job.reason else None,
        message=job.message,
        exit_code=job.exit_code,
        runner_id=None,
        gpu_indexes=[],
        host_ports=[],
        cache_key=None,
        reused_from=job.reused_from,
        history=[c.model_dump(mode="json") for c in job.history],
        version=0,
        submitted_at=job.submitted_at,
        finished_at=job.finished_at,
    )
    row.api_json = row_api_json(row)
    return row


def split_name(name: str) -> tuple[str, int]:
    """`wise-owl-3` → (`wise-owl`, 3), so names drawn here later never collide with it."""
    prefix, _, number = name.rpartition("-")
    if prefix and number.isdigit():
        return prefix, int(number)
    return name, 0
