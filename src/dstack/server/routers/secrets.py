from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.protocol import Secret, SecretRequest
from dstack.server.auth import require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import secrets as secret_service

router = APIRouter(prefix="/api/secrets", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.get("")
async def list_secrets(ctx: Ctx) -> list[Secret]:
    return await secret_service.list_secrets(ctx)


@router.post("", status_code=201)
async def add_secret(body: SecretRequest, ctx: Ctx) -> Secret:
    return await secret_service.add_secret(ctx, name=body.name, value=body.value)


@router.put("")
async def update_secret(body: SecretRequest, ctx: Ctx) -> Secret:
    return await secret_service.update_secret(ctx, name=body.name, value=body.value)


@router.delete("/{name}", status_code=204)
async def delete_secret(name: str, ctx: Ctx) -> Response:
    await secret_service.delete_secret(ctx, name=name)
    return Response(status_code=204)
