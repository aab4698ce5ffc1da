from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from dstack.models.artifacts import JobArtifacts
from dstack.models.protocol import (
    ImportRunRequest,
    LogsPage,
    NameRef,
    PlanResponse,
    RerunRequest,
    StopRunRequest,
    SubmitRunRequest,
    UploadRunRequest,
)
from dstack.models.run import Run
from dstack.models.runs_api import RunDeleted
from dstack.server.auth import (
    CurrentUser,
    VisibleRun,
    require_token,
    require_visible_run,
)
from dstack.server.context import ServerContext
from dstack.server.errors import InvalidRequestError
from dstack.server.routers.deps import get_ctx
from dstack.server.services import imports as import_service
from dstack.server.services import logs as log_service
from dstack.server.services import reruns as rerun_service
from dstack.server.services import runs as run_service
from dstack.server.services import uploads as upload_service
from dstack.server.services.scope import require_listing
from dstack.server.services.users import require_repo

MAX_RUNS_PAGE = 1000

router = APIRouter(prefix="/api/runs", dependencies=[Depends(require_token)])
Ctx = Annotated[ServerContext, Depends(get_ctx)]


@router.post("", status_code=201)
async def submit_run(body: SubmitRunRequest, ctx: Ctx, user: CurrentUser) -> Run:
    require_repo(user, body.repo.repo_id)
    return await run_service.submit_run(ctx, request=body, user=user.name)


@router.post("/plan")
async def plan_run(body: SubmitRunRequest, ctx: Ctx, user: CurrentUser) -> PlanResponse:
    require_repo(user, body.repo.repo_id)
    return await run_service.plan_run(ctx, request=body)


@router.post("/upload", status_code=201)
async def upload_run(body: UploadRunRequest, ctx: Ctx, user: CurrentUser) -> Run:
    require_repo(user, body.repo.repo_id)
    return await upload_service.upload_run(ctx, request=body, user=user.name)


@router.post("/import", status_code=201)
async def import_run(body: ImportRunRequest, ctx: Ctx, user: CurrentUser) -> Run:
    require_repo(user, body.run.repo.repo_id)
    return await import_service.import_run(ctx, request=body, user=user.name)


@router.get("", response_model=list[Run])
async def list_runs(
    ctx: Ctx,
    user: CurrentUser,
    all: bool = False,
    repo_id: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_RUNS_PAGE)] = None,
    before_at: datetime | None = None,
    before_name: str | None = None,
) -> Response:
    """The runs of `repo_id`; of every repository (admins) without it.

    With `limit`: a page of at most that many runs of any status, newest first; the next
    page passes the last run's `submitted_at` and `name` as `before_at` and `before_name`
    (keyset pagination: as fast deep in the history as on the first page)."""
    require_listing(user, repo_id, what="runs")
    if limit is None and (before_at is not None or before_name is not None):
        raise InvalidRequestError("before_at and before_name page a listing with a limit")
    if (before_at is None) != (before_name is None):
        raise InvalidRequestError("pass both before_at and before_name (the last run's)")
    if limit is not None:
        before = None
        if before_at is not None and before_name is not None:
            moment = before_at if before_at.tzinfo else before_at.replace(tzinfo=UTC)
            before = (moment, before_name)
        page = await run_service.list_runs_page_json(
            ctx, limit=limit, before=before, repos=user.visible_repos, repo_id=repo_id
        )
        return Response(content=page, media_type="application/json")
    runs = await run_service.list_runs_json(ctx, all=all, repo_id=repo_id, repos=user.visible_repos)
    return Response(content=runs, media_type="application/json")


@router.get("/{name}", dependencies=VisibleRun, response_model=Run)
async def get_run(name: str, ctx: Ctx) -> Response:
    """The run; its JSON made as the listings make theirs (`run_service._to_json`)."""
    run = await run_service.get_run_json(ctx, name=name)
    return Response(content=run, media_type="application/json")


@router.post("/{name}/stop", dependencies=VisibleRun)
async def stop_run(name: str, body: StopRunRequest, ctx: Ctx) -> Run:
    return await run_service.stop_run(ctx, name=name, abort=body.abort)


@router.post("/{name}/rerun", status_code=201, dependencies=VisibleRun)
async def rerun(name: str, ctx: Ctx, user: CurrentUser, body: RerunRequest | None = None) -> Run:
    """The run submitted again as it was (see `services/reruns.py`), by this user."""
    run = await run_service.get_run(ctx, name=name)
    require_repo(user, run.repo.repo_id)
    return await rerun_service.rerun(
        ctx, name=name, user=user.name, reload=body.reload if body else False
    )


@router.delete("/{name}", dependencies=VisibleRun)
async def delete_run(name: str, ctx: Ctx) -> RunDeleted:
    return await run_service.delete_run(ctx, name=name)


@router.post("/delete")
async def delete_run_named_in_body(
    body: NameRef, ctx: Ctx, request: Request, user: CurrentUser
) -> RunDeleted:
    """`DELETE /api/runs/{name}` for a name no URL path carries (a run imported before names
    had a rule, with a `/` in its name)."""
    await require_visible_run(body.name, request, user)
    return await delete_run(body.name, ctx)


@router.get("/{name}/artifacts", dependencies=VisibleRun)
async def get_artifacts(name: str, ctx: Ctx) -> list[JobArtifacts]:
    return await run_service.run_artifacts(ctx, run_name=name)


@router.get("/{name}/logs", dependencies=VisibleRun, response_model=LogsPage)
async def get_logs(
    name: str,
    ctx: Ctx,
    cursor: str | None = None,
    since: datetime | None = None,
    wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=log_service.MAX_PAGE)] = log_service.MAX_PAGE,
    with_run: bool = False,
) -> Response:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without a zone is UTC, as the API returns
    page = await log_service.get_logs(
        ctx, run_name=name, cursor=cursor, since=since, wait=wait, limit=limit, with_run=with_run
    )
    return _json(page)


def _json(model: BaseModel) -> Response:
    """The model as JSON in one step: the service built it from typed rows, so FastAPI's
    dump-validate-dump of the return value would only repeat work on a large page."""
    return Response(content=model.model_dump_json(), media_type="application/json")
