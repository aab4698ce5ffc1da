from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from dstack.server.auth import CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import workflow_caches as cache_service
from dstack.server.services.users import require_repo

router = APIRouter(prefix="/api/caches", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.delete("")
async def prune_caches(repo_id: str, workflow: str, ctx: Ctx, user: CurrentUser) -> dict[str, int]:
    require_repo(user, repo_id)
    deleted = await cache_service.prune_caches(ctx, repo_id=repo_id, workflow=workflow)
    return {"deleted": deleted}
