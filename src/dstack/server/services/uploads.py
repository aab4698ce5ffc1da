"""Uploaded runs: local folders stored as a finished run with one `upload` job, then tagged
(`dstack tags add TAG -a PATH...`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import ConflictError
from dstack.models.job import JobSpec, JobStatus, TerminationReason
from dstack.models.protocol import UploadRunRequest
from dstack.models.run import Run
from dstack.models.workflow import ArtifactSpec
from dstack.server.context import ServerContext
from dstack.server.db.models import TagRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services import jobs as job_service
from dstack.server.services import runs as run_service
from dstack.server.services.artifacts import put_manifest, require_blobs

PROVIDER = "upload"


async def upload_run(
    ctx: ServerContext, *, request: UploadRunRequest, user: str | None = None
) -> Run:
    """Create a done run of `request.repo`, submitted by `user`, holding `request.manifests`,
    and tag it `request.tag` there.

    400 (`StorageError`) naming the blobs the store lacks; 409 when the tag exists in that
    repository; 400 when two manifests share a path. Nothing is created on error.
    """
    paths = [m.path for m in request.manifests]
    if len(set(paths)) != len(paths):
        raise InvalidRequestError("two uploaded artifacts have the same path", hint="rename one")
    await require_blobs(ctx.blobs, [f.digest for m in request.manifests for f in m.files])
    async with ctx.transaction() as session:
        if await session.get(TagRow, (request.repo.repo_id, request.tag)) is not None:
            raise ConflictError(
                f"tag '{request.tag}' already exists in {request.repo.repo_id}",
                hint=f"delete it first: dstack tags delete {request.tag}",
            )
        name = await _insert(ctx, session, request, user)
    return await run_service.get_run(ctx, name=name)


async def _insert(
    ctx: ServerContext, session: AsyncSession, request: UploadRunRequest, user: str | None
) -> str:
    now = ctx.clock()
    name = await run_service.insert_run_row(
        ctx,
        session,
        repo=request.repo,
        workflow_name=None,
        provider=PROVIDER,
        args=[],
        variables={},
        tag=request.tag,
        user=user,
    )
    spec = JobSpec(
        provider=PROVIDER, artifacts=[ArtifactSpec(path=p.path) for p in request.manifests]
    )
    job = run_service.new_job_row(name, 0, None, spec, [], now)
    session.add(job)
    await session.flush()
    for manifest in request.manifests:
        await put_manifest(session, job.id, manifest, now)
    # Done through the one status function, which also sets the run's tag.
    await job_service.set_status(
        session, job, JobStatus.DONE, now=now, reason=TerminationReason.DONE, message="uploaded"
    )
    return name
