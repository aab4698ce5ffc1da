"""Repository clone settings (`dstack init`) for users; the clone secret for runners."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from dstack.models.repo import CloneCredentials, RepoCredentials, RepoCredentialsRequest
from dstack.models.repo import RepoCredentialsResponse as SetResponse
from dstack.server.auth import CurrentUser, RunnerId, require_runner
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import repos as repo_service

router = APIRouter(prefix="/api/repos")
runner_router = APIRouter(prefix="/api/jobs", dependencies=[Depends(require_runner)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
RepoId = Annotated[str, Query(min_length=1, max_length=500)]


@router.get("/credentials")
async def get_credentials(repo_id: RepoId, ctx: Ctx, user: CurrentUser) -> RepoCredentials:
    return await repo_service.get_credentials(ctx, principal=user, repo_id=repo_id)


@router.put("/credentials")
async def set_credentials(body: RepoCredentialsRequest, ctx: Ctx, user: CurrentUser) -> SetResponse:
    return await repo_service.set_credentials(ctx, principal=user, request=body)


@router.delete("/credentials", status_code=204)
async def delete_credentials(repo_id: RepoId, ctx: Ctx, user: CurrentUser) -> Response:
    await repo_service.delete_credentials(ctx, principal=user, repo_id=repo_id)
    return Response(status_code=204)


@runner_router.get("/{job_id}/repo-credentials")
async def clone_credentials(job_id: str, ctx: Ctx, runner_id: RunnerId) -> CloneCredentials:
    return await repo_service.clone_credentials(ctx, job_id=job_id, runner_id=runner_id)
