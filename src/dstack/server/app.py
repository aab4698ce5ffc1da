"""`create_app(settings)`: the FastAPI application of one server. Nothing global."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from dstack import __version__
from dstack.backends.registry import ComputeFactory, make_compute
from dstack.server.auth import announce_admin_token
from dstack.server.context import Clock, ServerContext, utcnow
from dstack.server.db.engine import create_engine
from dstack.server.db.migrate import upgrade_to_head
from dstack.server.errors import install_error_handlers
from dstack.server.local_runner import LocalRunnerSupervisor
from dstack.server.middleware import RequestGuard
from dstack.server.routers import backends as backend_routes
from dstack.server.routers import blobs as blob_routes
from dstack.server.routers import caches, health, jobs, repos, runners, runs, tags, tunnel
from dstack.server.routers import secrets as secret_routes
from dstack.server.routers import users as user_routes
from dstack.server.scheduler.loop import Scheduler
from dstack.server.services import backends as backend_service
from dstack.server.services import users as user_service
from dstack.server.settings import ServerSettings, make_private_dir
from dstack.server.storage import close_blob_store, open_blob_store
from dstack.storage.base import AdminBlobStore
from dstack.ui.mount import install as install_ui

logger = logging.getLogger(__name__)


def create_app(
    settings: ServerSettings,
    *,
    blobs: AdminBlobStore | None = None,
    clock: Clock = utcnow,
    compute_factory: ComputeFactory = make_compute,
    local_runner: LocalRunnerSupervisor | None = None,
) -> FastAPI:
    """The server app. Its lifespan migrates the database, then runs the scheduler loop and,
    when `settings.local_runner` is set, the local runner process (`local_runner`: its
    supervisor, made and maybe started early by the caller). Every HTTP request is
    authenticated and its body bounded before it is read (`RequestGuard`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_context(
            settings,
            blobs=blobs,
            clock=clock,
            compute_factory=compute_factory,
            local_runner=local_runner,
        ) as ctx:
            app.state.ctx = ctx
            if settings.freeze_heap_at_start:
                gc.collect()
                gc.freeze()
            yield

    app = FastAPI(title="dstack", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings)
    for module in (health, runs, runners, jobs, blob_routes, tags, caches, tunnel):
        app.include_router(module.router)
    app.include_router(user_routes.router)
    app.include_router(user_routes.tokens_router)
    app.include_router(secret_routes.router)
    app.include_router(repos.router)
    app.include_router(repos.runner_router)
    app.include_router(backend_routes.router)
    app.include_router(backend_routes.offers_router)
    install_ui(app)  # the web UI at `/`, after the API's routes
    return app


@contextlib.asynccontextmanager
async def running_context(
    settings: ServerSettings,
    *,
    blobs: AdminBlobStore | None = None,
    clock: Clock = utcnow,
    background: bool = True,
    compute_factory: ComputeFactory = make_compute,
    local_runner: LocalRunnerSupervisor | None = None,
) -> AsyncIterator[ServerContext]:
    """A migrated database, the scheduler loop and the local runner, for as long as it is
    entered. Usable without HTTP; with `background=False` nothing runs by itself (tests
    call `Scheduler.tick` when they choose)."""
    make_private_dir(settings.server_dir)
    engine = create_engine(settings.resolved_database_url())
    store = blobs if blobs is not None else open_blob_store(settings)
    try:
        await upgrade_to_head(engine)
        ctx = ServerContext(settings, engine, store, clock=clock, compute_factory=compute_factory)
        admin_token = await user_service.bootstrap_admin(ctx)
        if admin_token is not None:
            announce_admin_token(admin_token, settings.files.admin_token)
        try:
            if not background:
                yield ctx
                return
            async with _background(ctx, local_runner):
                yield ctx
        finally:
            await backend_service.close_all(ctx)
    finally:
        await engine.dispose()
        if blobs is None:
            close_blob_store(store)


@contextlib.asynccontextmanager
async def _background(
    ctx: ServerContext, supervisor: LocalRunnerSupervisor | None
) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(Scheduler(ctx).run_forever(), name="scheduler")]
    if ctx.settings.local_runner:
        # A fresh runner token per start, handed over in the runner's environment.
        token = await user_service.create_runner_token(
            ctx,
            created_by=ctx.settings.user,
            label=user_service.LOCAL_RUNNER_LABEL,
            replace=True,
            token=supervisor.token if supervisor is not None else None,
        )
        if supervisor is None:
            supervisor = LocalRunnerSupervisor(ctx.settings, token=token)
        tasks.append(asyncio.create_task(supervisor.run_forever(), name="local-runner"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
