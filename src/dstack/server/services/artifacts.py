"""Job artifacts: the manifests runners post, what a run's jobs produced, missing blobs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import anyio
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import NotFoundError, StorageError
from dstack.models.artifacts import JobArtifacts, Manifest
from dstack.server.context import ServerContext, mark_changed
from dstack.server.db.dialects import dialect_insert
from dstack.server.db.models import BlobTouchRow, JobRow, ManifestRow
from dstack.server.services import jobs as job_service
from dstack.storage.base import BlobStore, check_digest, missing_of

_NAMED = 3  # missing digests named in an error message


async def save_manifest(
    ctx: ServerContext, *, job_id: str, manifest: Manifest, runner_id: str
) -> None:
    """Replace the job's manifest of `manifest.path` (runners post one per periodic sync).

    404 when the job is gone; 403 unless runner `runner_id` holds it and it is not final
    (checked before anything else, and again when the manifest is written); 400
    (`StorageError`) naming the digests the store lacks — blobs are uploaded first.
    """
    await check_runner_of(ctx, job_id, runner_id)
    await require_blobs(ctx.blobs, [f.digest for f in manifest.files])
    async with ctx.transaction() as session:
        job = await require_job(session, job_id)
        check_runner(job, runner_id)
        await put_manifest(session, job_id, manifest, ctx.clock())
        mark_changed(session)


async def require_job(session: AsyncSession, job_id: str) -> JobRow:
    job = await session.get(JobRow, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} not found", hint="forget it: it was deleted")
    return job


def check_runner(job: JobRow, runner_id: str) -> None:
    """A report about a job must come from the runner that holds it, while it is not final."""
    job_service.check_holder(job, runner_id)


async def check_runner_of(ctx: ServerContext, job_id: str, runner_id: str) -> None:
    """`check_runner` in a read of its own: a runner learns nothing about another's job
    (not even which blobs its manifest lacks)."""
    async with ctx.read() as session:
        await job_service.require_held_job(session, job_id, runner_id)


async def require_blobs(store: BlobStore, digests: Iterable[str]) -> None:
    """Raise `StorageError` naming the digests `store` lacks."""
    missing = await missing_in(store, digests)
    if missing:
        named = ", ".join(missing[:_NAMED]) + (
            f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else ""
        )
        raise StorageError(
            f"{len(missing)} blob(s) of the manifest are not stored: {named}",
            hint="upload the blobs first, then post the manifest again",
        )


async def missing_in(store: BlobStore, digests: Iterable[str]) -> list[str]:
    """The distinct digests (in the order given) that `store` lacks, asked off the event loop:
    an object store answers over the network, a disk store with one stat per digest."""
    wanted = [check_digest(d) for d in dict.fromkeys(digests)]
    if not wanted:
        return []
    return await anyio.to_thread.run_sync(missing_of, store, wanted)


async def missing_blobs(ctx: ServerContext, *, digests: list[str]) -> list[str]:
    """The digests the store lacks. The ones it has are touched: the caller is about to
    reference them, so garbage collection spares them for its grace period."""
    missing = await missing_in(ctx.blobs, digests)
    present = set(digests) - set(missing)
    if present:
        await touch_blobs(ctx, present)
    return missing


async def touch_blobs(ctx: ServerContext, digests: Iterable[str]) -> None:
    """Mark the blobs as just announced: one upsert, safe when two requests touch the same
    digest at once (several server processes on PostgreSQL)."""
    now = ctx.clock()
    rows = [{"digest": d, "touched_at": now} for d in sorted(set(digests))]
    if not rows:
        return
    insert = dialect_insert(ctx.engine.dialect.name, BlobTouchRow)
    upsert = insert.on_conflict_do_update(
        index_elements=["digest"], set_={"touched_at": insert.excluded.touched_at}
    )
    async with ctx.transaction() as session:
        await session.execute(upsert, rows)


async def put_manifest(
    session: AsyncSession, job_id: str, manifest: Manifest, now: datetime
) -> None:
    await session.execute(
        delete(ManifestRow).where(ManifestRow.job_id == job_id, ManifestRow.path == manifest.path)
    )
    session.add(
        ManifestRow(
            job_id=job_id,
            path=manifest.path,
            manifest=manifest.model_dump(mode="json"),
            digest=manifest.digest(),
            size=manifest.size,
            updated_at=now,
        )
    )
    await session.flush()


async def manifests_of(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, list[Manifest]]:
    """job id → its manifests, sorted by path (jobs without any are absent)."""
    if not job_ids:
        return {}
    rows = await session.scalars(
        select(ManifestRow).where(ManifestRow.job_id.in_(job_ids)).order_by(ManifestRow.path)
    )
    result: dict[str, list[Manifest]] = {}
    for row in rows:
        result.setdefault(row.job_id, []).append(Manifest.model_validate(row.manifest))
    return result


async def copy_manifests(session: AsyncSession, source: str, target: str, now: datetime) -> None:
    """Give `target` (a cached job) copies of `source`'s manifests, so the artifacts stay
    with it when the source's run is deleted."""
    for manifest in (await manifests_of(session, [source])).get(source, []):
        await put_manifest(session, target, manifest, now)


async def job_artifacts(session: AsyncSession, jobs: Sequence[JobRow]) -> list[JobArtifacts]:
    """What `jobs` produced, in the given order; a cached job is shown as the job it reused
    (that job's id and run name). Jobs with no manifests are left out."""
    manifests = await manifests_of(session, [j.id for j in jobs])
    return [
        JobArtifacts(
            job_id=job.reused_job_id or job.id,
            run_name=job.reused_from or job.run_name,
            workflow_name=job.workflow_name,
            manifests=manifests[job.id],
            node_rank=job.spec.get("node_rank") or 0,
        )
        for job in jobs
        if job.id in manifests
    ]
