from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.artifacts import Tag
from dstack.models.protocol import NameRef, TagRequest
from dstack.server.auth import CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import tags as tag_service

router = APIRouter(prefix="/api/tags", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("")
async def list_tags(ctx: Ctx, user: CurrentUser, repo_id: str | None = None) -> list[Tag]:
    return await tag_service.list_tags(ctx, repo_id=repo_id, repos=user.repos)


@router.post("", status_code=201)
async def add_tag(body: TagRequest, ctx: Ctx, user: CurrentUser) -> Tag:
    return await tag_service.add_tag(ctx, name=body.name, run_name=body.run_name, repos=user.repos)


@router.delete("/{name}", status_code=204)
async def delete_tag(name: str, ctx: Ctx, user: CurrentUser) -> Response:
    await tag_service.delete_tag(ctx, name=name, repos=user.repos)
    return Response(status_code=204)


@router.post("/delete", status_code=204)
async def delete_tag_named_in_body(body: NameRef, ctx: Ctx, user: CurrentUser) -> Response:
    """`DELETE /api/tags/{name}` for a name no URL can carry (one stored before names had a
    rule: tens of thousands of characters)."""
    return await delete_tag(body.name, ctx, user)
