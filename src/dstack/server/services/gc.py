"""Blob garbage collection: delete blobs that nothing references and nobody just touched.

References: every job manifest (cached jobs hold copies of their origins'), every saved
workflow cache, every run's code (`bundle_digest`, `diff_digest`), and the external-dependency
artifacts of jobs not finished yet. A blob younger than `settings.gc_grace_seconds` survives —
by when the store says it was stored (`SupportsStoredAt`: a folder's file times), and by its
last touch (an upload, or a `missing` query announcing it) — so an upload whose manifest has
not arrived is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.server.context import ServerContext
from dstack.server.db.models import (
    UNFINISHED_JOB,
    BlobTouchRow,
    JobRow,
    ManifestRow,
    RunRow,
    WorkflowCacheRow,
)
from dstack.storage.base import AdminBlobStore, SupportsStoredAt

logger = logging.getLogger(__name__)


async def collect(ctx: ServerContext) -> list[str]:
    """Delete unreferenced blobs older than the grace period; return their digests.

    Reads references in one transaction, then lists and deletes outside it (no I/O inside a
    transaction). A manifest committed after the read can only name a blob uploaded or
    touched within the grace period, which is spared.
    """
    now = ctx.clock()
    async with ctx.transaction() as session:
        referenced = await referenced_digests(session)
        touches = dict(
            (await session.execute(select(BlobTouchRow.digest, BlobTouchRow.touched_at))).all()
        )
    stored = await anyio.to_thread.run_sync(lambda: list(ctx.blobs.list_digests()))
    grace = timedelta(seconds=ctx.settings.gc_grace_seconds)
    candidates = [d for d in stored if d not in referenced]
    old = [d for d in candidates if not _young(ctx.blobs, d, touches.get(d), now, grace)]
    unseen = [d for d in candidates if d not in touches and _stored_at(ctx.blobs, d) is None]
    await anyio.to_thread.run_sync(_delete, ctx.blobs, old)
    await _record(ctx, unseen, old, now)
    if old:
        logger.info("deleted %d unreferenced blob(s)", len(old))
    return old


async def referenced_digests(session: AsyncSession) -> set[str]:
    digests: set[str] = set()
    for (manifest,) in await session.execute(select(ManifestRow.manifest)):
        digests.update(_files(manifest))
    for (manifest,) in await session.execute(select(WorkflowCacheRow.manifest)):
        digests.update(_files(manifest))
    for (repo,) in await session.execute(select(RunRow.repo)):
        digests.update(d for d in (repo.get("bundle_digest"), repo.get("diff_digest")) if d)
    pending = select(JobRow.external_artifacts).where(UNFINISHED_JOB)
    for (artifacts,) in await session.execute(pending):
        for item in artifacts or []:
            for manifest in item.get("manifests", []):
                digests.update(_files(manifest))
    return digests


def _files(manifest: dict[str, Any]) -> Iterable[str]:
    return (f["digest"] for f in manifest.get("files", []))


def _young(
    store: AdminBlobStore, digest: str, touched: datetime | None, now: datetime, grace: timedelta
) -> bool:
    if grace <= timedelta(0):
        return False
    times = [t for t in (touched, _stored_at(store, digest)) if t is not None]
    # Never seen before (a store without file times): this pass starts its clock.
    return not times or any(now - t < grace for t in times)


def _stored_at(store: AdminBlobStore, digest: str) -> datetime | None:
    return store.stored_at(digest) if isinstance(store, SupportsStoredAt) else None


async def _record(ctx: ServerContext, unseen: list[str], deleted: list[str], now: datetime) -> None:
    """Start the clock of blobs first seen now; forget the touches of deleted ones."""
    if not unseen and not deleted:
        return
    async with ctx.transaction() as session:
        if deleted:
            await session.execute(delete(BlobTouchRow).where(BlobTouchRow.digest.in_(deleted)))
        for digest in unseen:
            if digest not in deleted and await session.get(BlobTouchRow, digest) is None:
                session.add(BlobTouchRow(digest=digest, touched_at=now))


def _delete(store: AdminBlobStore, digests: list[str]) -> None:
    for digest in digests:
        store.delete(digest)
