from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.artifacts import Tag
from dstack.models.protocol import TagRequest
from dstack.server.auth import require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import tags as tag_service

router = APIRouter(prefix="/api/tags", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("")
async def list_tags(ctx: Ctx, repo_id: str | None = None) -> list[Tag]:
    return await tag_service.list_tags(ctx, repo_id=repo_id)


@router.post("", status_code=201)
async def add_tag(body: TagRequest, ctx: Ctx) -> Tag:
    return await tag_service.add_tag(ctx, name=body.name, run_name=body.run_name)


@router.delete("/{name}", status_code=204)
async def delete_tag(name: str, ctx: Ctx) -> Response:
    await tag_service.delete_tag(ctx, name=name)
    return Response(status_code=204)
