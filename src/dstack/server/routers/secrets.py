"""Secrets of one repository (`repo_id`) or global (no `repo_id`: admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.protocol import Secret, SecretRequest
from dstack.server.auth import CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import secrets as secret_service
from dstack.server.services.scope import is_admin, require_secret_scope

router = APIRouter(prefix="/api/secrets", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("")
async def list_secrets(ctx: Ctx, user: CurrentUser, repo_id: str | None = None) -> list[Secret]:
    """The repository's secrets (and, for admins, the global ones); the global ones alone
    without `repo_id`."""
    require_secret_scope(user, repo_id)
    return await secret_service.list_secrets(
        ctx, repo_id=repo_id, with_global=repo_id is not None and is_admin(user)
    )


@router.post("", status_code=201)
async def add_secret(body: SecretRequest, ctx: Ctx, user: CurrentUser) -> Secret:
    require_secret_scope(user, body.repo_id)
    return await secret_service.add_secret(
        ctx, name=body.name, value=body.value, repo_id=body.repo_id
    )


@router.put("")
async def update_secret(body: SecretRequest, ctx: Ctx, user: CurrentUser) -> Secret:
    require_secret_scope(user, body.repo_id)
    return await secret_service.update_secret(
        ctx, name=body.name, value=body.value, repo_id=body.repo_id
    )


@router.delete("/{name}", status_code=204)
async def delete_secret(
    name: str, ctx: Ctx, user: CurrentUser, repo_id: str | None = None
) -> Response:
    require_secret_scope(user, repo_id)
    await secret_service.delete_secret(ctx, name=name, repo_id=repo_id)
    return Response(status_code=204)
