"""Tags of one repository (`repo_id`); every repository's listing is for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.artifacts import Tag
from dstack.models.protocol import TagRef, TagRequest
from dstack.server.auth import CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import tags as tag_service
from dstack.server.services.scope import require_listing
from dstack.server.services.users import require_repo

router = APIRouter(prefix="/api/tags", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("")
async def list_tags(ctx: Ctx, user: CurrentUser, repo_id: str | None = None) -> list[Tag]:
    require_listing(user, repo_id, what="tags")
    return await tag_service.list_tags(ctx, repo_id=repo_id, repos=user.repos)


@router.post("", status_code=201)
async def add_tag(body: TagRequest, ctx: Ctx, user: CurrentUser) -> Tag:
    return await tag_service.add_tag(ctx, name=body.name, run_name=body.run_name, repos=user.repos)


@router.delete("/{name}", status_code=204)
async def delete_tag(name: str, repo_id: str, ctx: Ctx, user: CurrentUser) -> Response:
    require_repo(user, repo_id)
    await tag_service.delete_tag(ctx, name=name, repo_id=repo_id, repos=user.repos)
    return Response(status_code=204)


@router.post("/delete", status_code=204)
async def delete_tag_named_in_body(body: TagRef, ctx: Ctx, user: CurrentUser) -> Response:
    """`DELETE /api/tags/{name}` for a name no URL can carry (one stored before names had a
    rule: tens of thousands of characters)."""
    return await delete_tag(body.name, body.repo_id, ctx, user)
