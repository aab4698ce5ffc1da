"""`/api/backends` (admins: add, list, delete cloud backends) and `/api/offers` (any user:
what the backends offer for some resources)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.backends_api import AddBackendRequest, BackendInfo, OffersRequest, OffersResponse
from dstack.server.auth import Admin, CurrentUser, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import backends as backend_service

router = APIRouter(prefix="/api/backends", dependencies=[Depends(require_token)])
offers_router = APIRouter(prefix="/api/offers", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.post("", status_code=201)
async def add_backend(body: AddBackendRequest, ctx: Ctx, admin: Admin) -> BackendInfo:
    return await backend_service.add_backend(ctx, request=body, created_by=admin.name)


@router.get("")
async def list_backends(ctx: Ctx, _admin: Admin) -> list[BackendInfo]:
    return await backend_service.list_backends(ctx)


@router.delete("/{name}", status_code=204)
async def delete_backend(name: str, ctx: Ctx, _admin: Admin) -> Response:
    await backend_service.delete_backend(ctx, name=name)
    return Response(status_code=204)


@offers_router.post("")
async def offers(body: OffersRequest, ctx: Ctx, _user: CurrentUser) -> OffersResponse:
    return await backend_service.offers(
        ctx, body.resources, body.spot, body.max_price, limit=body.limit
    )
