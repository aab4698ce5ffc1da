from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.protocol import (
    CreateUserRequest,
    CreateUserResponse,
    RunnerTokenResponse,
    User,
)
from dstack.server.auth import Admin, CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import users as user_service

router = APIRouter(prefix="/api/users", dependencies=[Depends(require_token)])
tokens_router = APIRouter(prefix="/api/runners/tokens")
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("/me")
async def me(ctx: Ctx, user: CurrentUser) -> User:
    return await user_service.get_user(ctx, name=user.name)


@router.get("")
async def list_users(ctx: Ctx, _admin: Admin) -> list[User]:
    return await user_service.list_users(ctx)


@router.post("", status_code=201)
async def create_user(body: CreateUserRequest, ctx: Ctx, _admin: Admin) -> CreateUserResponse:
    return await user_service.create_user(ctx, request=body)


@router.delete("/{name}", status_code=204)
async def delete_user(name: str, ctx: Ctx, _admin: Admin) -> Response:
    await user_service.delete_user(ctx, name=name)
    return Response(status_code=204)


@tokens_router.post("", status_code=201)
async def create_runner_token(ctx: Ctx, admin: Admin) -> RunnerTokenResponse:
    token = await user_service.create_runner_token(ctx, created_by=admin.name)
    return RunnerTokenResponse(token=token)
