from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.ui.helpers import ADMIN

from dstack.server.app import create_app
from dstack.server.context import ServerContext
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN, user="admin")
    application = create_app(settings, blobs=MemoryBlobStore())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def ctx(app: FastAPI) -> ServerContext:
    context = app.state.ctx
    assert isinstance(context, ServerContext)
    return context


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
