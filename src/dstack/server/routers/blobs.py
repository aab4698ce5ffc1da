from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from dstack.models.protocol import (
    MissingBlobsRequest,
    MissingBlobsResponse,
    PresignRequest,
    PresignResponse,
)
from dstack.server.auth import require_user_or_runner
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import artifacts as artifact_service
from dstack.server.services import blobs as blob_service
from dstack.server.services import presign as presign_service

router = APIRouter(prefix="/api/blobs", dependencies=[Depends(require_user_or_runner)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.post("/missing")
async def missing_blobs(body: MissingBlobsRequest, ctx: Ctx) -> MissingBlobsResponse:
    missing = await artifact_service.missing_blobs(ctx, digests=body.digests)
    return MissingBlobsResponse(missing=missing)


@router.post("/presign")
async def presign_blobs(body: PresignRequest, ctx: Ctx) -> PresignResponse:
    urls = await presign_service.presign(ctx, digests=body.digests, method=body.method)
    return PresignResponse(urls=urls)


@router.head("/{digest}")
async def head_blob(digest: str, ctx: Ctx) -> Response:
    if not blob_service.exists(ctx, digest=digest):
        return Response(status_code=404)
    size = blob_service.size(ctx, digest=digest)
    return Response(status_code=200, headers={"content-length": str(size)})


@router.get("/{digest}")
async def get_blob(digest: str, ctx: Ctx) -> StreamingResponse:
    size = blob_service.size(ctx, digest=digest)
    chunks = blob_service.open_blob(ctx, digest=digest)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"content-length": str(size)},
    )


@router.put("/{digest}", status_code=204)
async def put_blob(digest: str, request: Request, ctx: Ctx) -> Response:
    await blob_service.put_blob(ctx, digest=digest, chunks=request.stream())
    return Response(status_code=204)
