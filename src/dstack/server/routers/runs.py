from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from dstack.models.artifacts import JobArtifacts
from dstack.models.protocol import (
    LogsPage,
    PlanResponse,
    StopRunRequest,
    SubmitRunRequest,
    UploadRunRequest,
)
from dstack.models.run import Run
from dstack.server.auth import require_token
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import artifacts as artifact_service
from dstack.server.services import logs as log_service
from dstack.server.services import runs as run_service
from dstack.server.services import uploads as upload_service

router = APIRouter(prefix="/api/runs", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.post("", status_code=201)
async def submit_run(body: SubmitRunRequest, ctx: Ctx) -> Run:
    return await run_service.submit_run(ctx, request=body)


@router.post("/plan")
async def plan_run(body: SubmitRunRequest, ctx: Ctx) -> PlanResponse:
    return await run_service.plan_run(ctx, request=body)


@router.post("/upload", status_code=201)
async def upload_run(body: UploadRunRequest, ctx: Ctx) -> Run:
    return await upload_service.upload_run(ctx, request=body)


@router.get("")
async def list_runs(ctx: Ctx, all: bool = False, repo_id: str | None = None) -> list[Run]:
    return await run_service.list_runs(ctx, all=all, repo_id=repo_id)


@router.get("/{name}")
async def get_run(name: str, ctx: Ctx) -> Run:
    return await run_service.get_run(ctx, name=name)


@router.post("/{name}/stop")
async def stop_run(name: str, body: StopRunRequest, ctx: Ctx) -> Run:
    return await run_service.stop_run(ctx, name=name, abort=body.abort)


@router.delete("/{name}", status_code=204)
async def delete_run(name: str, ctx: Ctx) -> Response:
    await run_service.delete_run(ctx, name=name)
    return Response(status_code=204)


@router.get("/{name}/artifacts")
async def get_artifacts(name: str, ctx: Ctx) -> list[JobArtifacts]:
    return await artifact_service.run_artifacts(ctx, run_name=name)


@router.get("/{name}/logs")
async def get_logs(
    name: str,
    ctx: Ctx,
    cursor: str | None = None,
    since: datetime | None = None,
    wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=log_service.MAX_PAGE)] = log_service.MAX_PAGE,
) -> LogsPage:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without a zone is UTC, as the API returns
    return await log_service.get_logs(
        ctx, run_name=name, cursor=cursor, since=since, wait=wait, limit=limit
    )
