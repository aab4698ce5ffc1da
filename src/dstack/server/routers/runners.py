from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from dstack.models.protocol import (
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssignment,
    RegisterRunnerRequest,
    RegisterRunnerResponse,
)
from dstack.models.runner import Runner
from dstack.server.auth import Admin, OwnRunnerId, Principal, require_registration, require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import claims as claim_service
from dstack.server.services import runners as runner_service

router = APIRouter(prefix="/api/runners")
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Registrant = Annotated[Principal, Depends(require_registration)]


@router.get("", dependencies=[Depends(require_token)])
async def list_runners(ctx: Ctx) -> list[Runner]:
    return await runner_service.list_runners(ctx)


@router.post("/register")
async def register(
    body: RegisterRunnerRequest, ctx: Ctx, caller: Registrant
) -> RegisterRunnerResponse:
    return await runner_service.register(
        ctx, runner_id=caller.runner_id, request=body, instance=caller.instance
    )


@router.delete("/{name}", status_code=204)
async def remove_runner(name: str, ctx: Ctx, _admin: Admin) -> Response:
    await runner_service.remove_runner(ctx, name=name)
    return Response(status_code=204)


@router.post("/{runner_id}/heartbeat")
async def heartbeat(runner_id: OwnRunnerId, body: HeartbeatRequest, ctx: Ctx) -> HeartbeatResponse:
    return await runner_service.heartbeat(ctx, runner_id=runner_id, request=body)


@router.post("/{runner_id}/claim", response_model=JobAssignment)
async def claim(runner_id: OwnRunnerId, body: ClaimRequest, ctx: Ctx, request: Request) -> Response:
    assignment = await claim_service.claim(
        ctx, runner_id=runner_id, wait_seconds=body.wait_seconds, gone=request.is_disconnected
    )
    if assignment is None:
        return Response(status_code=204)
    # Serialised once: FastAPI would walk the returned model with its generic encoder.
    return Response(content=assignment.model_dump_json(), media_type="application/json")
