"""Workflow caches (`cache: [path]`): saved after a job, restored before the next one of the
same workflow in the same repository."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.models.artifacts import Manifest
from dstack.server.context import ServerContext
from dstack.server.db.models import RunRow, WorkflowCacheRow
from dstack.server.services import gc
from dstack.server.services.artifacts import (
    check_runner,
    check_runner_of,
    require_blobs,
    require_job,
)


async def save_cache(
    ctx: ServerContext, *, job_id: str, manifest: Manifest, runner_id: str
) -> None:
    """Replace the saved cache of `manifest.path` for the job's (repository, workflow).

    Same checks as artifact manifests: 404 job gone, 403 not held by runner `runner_id` or
    final, 400 blobs missing.
    """
    await check_runner_of(ctx, job_id, runner_id)
    await require_blobs(ctx.blobs, [f.digest for f in manifest.files])
    async with ctx.transaction() as session:
        job = await require_job(session, job_id)
        check_runner(job, runner_id)
        run = await session.get(RunRow, job.run_name)
        assert run is not None
        key = (run.repo_id, job.workflow_name or "", manifest.path)
        row = await session.get(WorkflowCacheRow, key)
        if row is None:
            row = WorkflowCacheRow(repo_id=key[0], workflow_name=key[1], path=key[2])
            session.add(row)
        row.manifest = manifest.model_dump(mode="json")
        row.digest = manifest.digest()
        row.size = manifest.size
        row.updated_at = ctx.clock()


_CACHES_OF = (
    select(WorkflowCacheRow.__table__.c.manifest)
    .where(
        WorkflowCacheRow.repo_id == bindparam("repo_id"),
        WorkflowCacheRow.workflow_name == bindparam("workflow"),
    )
    .order_by(WorkflowCacheRow.path)
)


async def caches_for(
    session: AsyncSession, repo_id: str, workflow: str | None, paths: Sequence[str]
) -> list[Manifest]:
    """The saved caches of a workflow, by path, of those `paths` its job declares: one
    saved for a path the workflow no longer declares stays saved, but is not restored."""
    if not paths:  # most jobs declare none: no query
        return []
    rows = await session.scalars(_CACHES_OF, {"repo_id": repo_id, "workflow": workflow or ""})
    declared = set(paths)
    return [Manifest.model_validate(m) for m in rows if m["path"] in declared]


async def prune_caches(ctx: ServerContext, *, repo_id: str, workflow: str) -> int:
    """Forget every saved cache of the workflow, then reclaim the blobs nothing else
    references. Returns how many cache paths were removed (0 is not an error)."""
    async with ctx.transaction() as session:
        result = await session.execute(
            delete(WorkflowCacheRow).where(
                WorkflowCacheRow.repo_id == repo_id, WorkflowCacheRow.workflow_name == workflow
            )
        )
        deleted = int(getattr(result, "rowcount", 0) or 0)
    await gc.collect(ctx)
    return deleted
