"""Tags: a name (unique within its repository) pointing at a successful run of that repository,
and so at its artifacts. The same name in two repositories is two tags: tagging, moving
(`dstack run -t`), deleting and resolving (`deps: - tag:`) a tag happen in one repository."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import ConflictError, NotFoundError
from dstack.models.artifacts import Tag
from dstack.models.job import JobStatus
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.models import JobRow, ManifestRow, RunRow, TagRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services import gc


async def list_tags(
    ctx: ServerContext, *, repo_id: str | None = None, repos: Collection[str] | None = None
) -> list[Tag]:
    """Every tag (of one repository when `repo_id` is given; only of `repos` when that is not
    None: a user sees the tags of the repositories they have access to), newest first."""
    async with ctx.transaction() as session:
        query = select(TagRow).order_by(TagRow.created_at.desc(), TagRow.name, TagRow.repo_id)
        if repo_id is not None:
            query = query.where(TagRow.repo_id == repo_id)
        if repos is not None:
            query = query.where(TagRow.repo_id.in_(list(repos)))
        rows = (await session.scalars(query)).all()
        return await _to_models(session, rows)


async def add_tag(
    ctx: ServerContext, *, name: str, run_name: str, repos: Collection[str] | None = None
) -> Tag:
    """Tag a run that succeeded, in the run's repository. 404: no such run (or one outside
    `repos`); 409: the name is taken in that repository, or the run is not done (yet, or
    ever)."""
    _check_name(name)
    async with ctx.transaction() as session:
        run = await session.get(RunRow, run_name)
        if run is None or (repos is not None and run.repo_id not in repos):
            raise NotFoundError(f"run '{run_name}' not found", hint="see `dstack ps -a`")
        existing = await session.get(TagRow, (run.repo_id, name))
        if existing is not None:
            raise ConflictError(
                f"tag '{name}' already exists (on run {existing.run_name})",
                hint=f"delete it first: dstack tags delete {name}",
            )
        if not await run_is_done(session, run_name):
            raise ConflictError(
                f"run '{run_name}' did not succeed, so it cannot be tagged",
                hint="tag a run whose status is done",
            )
        row = await set_tag(session, name, run, ctx.clock())
        await session.flush()
        return (await _to_models(session, [row]))[0]


async def delete_tag(
    ctx: ServerContext, *, name: str, repo_id: str, repos: Collection[str] | None = None
) -> None:
    """Remove the tag `name` of `repo_id` (not the run); then reclaim blobs nothing
    references. 404 if missing (or `repo_id` is outside `repos`)."""
    async with ctx.transaction() as session:
        row = await session.get(TagRow, (repo_id, name))
        if row is None or (repos is not None and row.repo_id not in repos):
            raise NotFoundError(
                f"tag '{name}' does not exist", hint=f"see `dstack tags list` ({repo_id})"
            )
        await session.delete(row)
        mark_changed(session)
    await gc.collect(ctx)


async def set_tag(session: AsyncSession, name: str, run: RunRow, now: datetime) -> TagRow:
    """Point `name` at `run`, moving it if it points at another run of the same repository
    (a tag of another repository with that name is another tag, left alone)."""
    existing = await session.get(TagRow, (run.repo_id, name))
    if existing is None:
        row = _new_row(name, run, now)
        session.add(row)
        return row
    existing.run_name = run.name
    existing.workflow_name, existing.created_at = run.workflow_name, now
    return existing


_RUN_TAG = select(RunRow.__table__.c.tag).where(RunRow.__table__.c.name == bindparam("name"))


async def on_job_done(session: AsyncSession, job: JobRow, now: datetime) -> None:
    """Called when a job became done: a run submitted with a tag gets it once every job is
    done (the tag moves if it pointed at another run)."""
    # Most runs have no tag: that is asked without loading the run.
    if not await session.scalar(_RUN_TAG, {"name": job.run_name}):
        return
    run = await session.get(RunRow, job.run_name)
    if run is None or not run.tag:
        return
    if await run_is_done(session, run.name):
        await set_tag(session, run.tag, run, now)


async def run_is_done(session: AsyncSession, run_name: str) -> bool:
    statuses = (
        await session.scalars(select(JobRow.status).where(JobRow.run_name == run_name))
    ).all()
    return bool(statuses) and all(s == JobStatus.DONE.value for s in statuses)


def _new_row(name: str, run: RunRow, now: datetime) -> TagRow:
    return TagRow(
        name=name,
        run_name=run.name,
        repo_id=run.repo_id,
        workflow_name=run.workflow_name,
        created_at=now,
    )


def _check_name(name: str) -> None:
    if not name or ":" in name or "/" in name or name.strip() != name:
        raise InvalidRequestError(
            f"'{name}' is not a valid tag name",
            hint="use letters, digits, dots, dashes and underscores",
        )


async def _to_models(session: AsyncSession, rows: Sequence[TagRow]) -> list[Tag]:
    sizes = await _run_sizes(session, [r.run_name for r in rows])
    return [
        Tag(
            name=r.name,
            run_name=r.run_name,
            repo_id=r.repo_id,
            workflow_name=r.workflow_name,
            created_at=r.created_at,
            size=sizes.get(r.run_name, 0),
        )
        for r in rows
    ]


async def _run_sizes(session: AsyncSession, runs: list[str]) -> dict[str, int]:
    if not runs:
        return {}
    rows = await session.execute(
        select(JobRow.run_name, func.coalesce(func.sum(ManifestRow.size), 0))
        .join(ManifestRow, ManifestRow.job_id == JobRow.id)
        .where(JobRow.run_name.in_(runs))
        .group_by(JobRow.run_name)
    )
    return {run: int(size) for run, size in rows}
