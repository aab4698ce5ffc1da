from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from dstack.server.auth import require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import workflow_caches as cache_service

router = APIRouter(prefix="/api/caches", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.delete("")
async def prune_caches(repo_id: str, workflow: str, ctx: Ctx) -> dict[str, int]:
    deleted = await cache_service.prune_caches(ctx, repo_id=repo_id, workflow=workflow)
    return {"deleted": deleted}
