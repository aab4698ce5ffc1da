"""Blobs over HTTP: uploads are streamed to a temp file and verified before they are stored."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

from dstack.models.digests import LEGACY, new_hasher
from dstack.server.context import ServerContext
from dstack.server.services.artifacts import touch_blobs
from dstack.storage.base import check_digest, hash_file, verify


def exists(ctx: ServerContext, *, digest: str) -> bool:
    return ctx.blobs.exists(check_digest(digest))


def size(ctx: ServerContext, *, digest: str) -> int:
    return ctx.blobs.size(check_digest(digest))


def open_blob(ctx: ServerContext, *, digest: str) -> Iterator[bytes]:
    """The blob's chunks; raises `NotFoundError` at once when it is missing."""
    return ctx.blobs.open(check_digest(digest))


async def put_blob(ctx: ServerContext, *, digest: str, chunks: AsyncIterator[bytes]) -> None:
    """Store the uploaded bytes under `digest`; a mismatch raises `StorageError` and stores
    nothing. Never holds the whole upload in memory."""
    check_digest(digest)
    upload_dir = ctx.settings.files.uploads
    upload_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # inside the 0700 server dir
    fd, name = tempfile.mkstemp(dir=upload_dir)
    tmp = Path(name)
    try:
        hasher = new_hasher()
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                hasher.update(chunk)
                out.write(chunk)
        verify(digest, hasher.hexdigest(), lambda: hash_file(tmp, LEGACY))
        await anyio.to_thread.run_sync(ctx.blobs.put_file, tmp, digest)
        # A fresh upload is about to be referenced: garbage collection must wait for it.
        await touch_blobs(ctx, [digest])
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
