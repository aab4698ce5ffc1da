from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from dstack.models.artifacts import Manifest
from dstack.models.protocol import JobAssignment, JobStatusUpdate, LogBatch
from dstack.server.auth import RunnerId, require_runner
from dstack.server.context import ServerContext
from dstack.server.routers.deps import get_ctx
from dstack.server.services import artifacts as artifact_service
from dstack.server.services import claims as claim_service
from dstack.server.services import logs as log_service
from dstack.server.services import workflow_caches as cache_service

router = APIRouter(prefix="/api/jobs", dependencies=[Depends(require_runner)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.post("/{job_id}/status", status_code=204, responses={200: {"model": JobAssignment}})
async def report_status(
    job_id: str, body: JobStatusUpdate, ctx: Ctx, runner_id: RunnerId
) -> Response:
    """204; with `next_job` on a final status, the runner's next job when one fits (200):
    the claim it would send next, answered in this round trip."""
    assignment = await claim_service.report_status(
        ctx, job_id=job_id, update=body, runner_id=runner_id
    )
    if assignment is None:
        return Response(status_code=204)
    # Serialised once, as the claim endpoint does.
    return Response(content=assignment.model_dump_json(), media_type="application/json")


@router.post("/{job_id}/logs", status_code=204)
async def append_logs(job_id: str, body: LogBatch, ctx: Ctx, runner_id: RunnerId) -> Response:
    await log_service.append_logs(ctx, job_id=job_id, batch=body, runner_id=runner_id)
    return Response(status_code=204)


@router.post("/{job_id}/artifacts", status_code=204)
async def post_artifacts(job_id: str, body: Manifest, ctx: Ctx, runner_id: RunnerId) -> Response:
    await artifact_service.save_manifest(ctx, job_id=job_id, manifest=body, runner_id=runner_id)
    return Response(status_code=204)


@router.post("/{job_id}/caches", status_code=204)
async def post_cache(job_id: str, body: Manifest, ctx: Ctx, runner_id: RunnerId) -> Response:
    await cache_service.save_cache(ctx, job_id=job_id, manifest=body, runner_id=runner_id)
    return Response(status_code=204)
