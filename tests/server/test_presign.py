"""A server with S3 storage: runners move artifact bytes straight to S3, never through it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.infra.moto import MotoServer

from dstack.api.presigned import PresignedBlobStore
from dstack.api.runner import RunnerClient
from dstack.models.artifacts import StorageAccess
from dstack.models.protocol import RegisterRunnerRequest
from dstack.models.resources import HostResources
from dstack.runner.blobs import open_blob_store
from dstack.server.app import create_app, running_context
from dstack.server.services import claims, runs
from dstack.server.settings import ServerSettings
from dstack.storage.manifests import scan
from dstack.storage.s3 import S3BlobStore
from dstack.storage.transfer import place, push

from .conftest import register, submission

pytestmark = pytest.mark.s3


class Recorder:
    """ASGI middleware that remembers every request's method and path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def s3_server(
    tmp_path: Path, moto_s3: MotoServer, s3_bucket: str, db_url: str | None
) -> Iterator[tuple[ServerSettings, Recorder]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = ServerSettings(
        home=tmp_path / "home",
        token="secret-token",
        runner_token="runner-registration-token",
        port=sock.getsockname()[1],
        database_url=db_url,
        storage=f"s3://{s3_bucket}/team",
        s3_endpoint_url=moto_s3.endpoint,
    )
    recorder = Recorder(create_app(settings))
    server = uvicorn.Server(uvicorn.Config(recorder, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "test server did not start"
    try:
        yield settings, recorder
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_artifacts_go_between_runner_and_s3_without_the_server(
    s3_server: tuple[ServerSettings, Recorder], moto_s3: MotoServer, tmp_path: Path
) -> None:
    settings, recorder = s3_server
    runner = RunnerClient(settings.url, "runner-registration-token")
    runner.register(
        RegisterRunnerRequest(
            name="s3-runner",
            host="h",
            resources=HostResources(cpus=1, memory_mib=1024, disk_mib=1024),
            executors=["process"],
        )
    )
    store = open_blob_store(StorageAccess(kind="presigned"), runner)
    assert isinstance(store, PresignedBlobStore)
    out = tmp_path / "job" / "out"
    out.mkdir(parents=True)
    (out / "model.bin").write_bytes(b"w" * 300_000)
    (out / "metrics.json").write_text('{"loss": 0.1}')

    manifest = scan(out, "out")
    with contextlib.closing(store), contextlib.closing(runner):
        push(manifest, out, store)
        place(manifest, tmp_path / "elsewhere", store)

    assert (tmp_path / "elsewhere" / "model.bin").read_bytes() == b"w" * 300_000
    assert settings.storage is not None
    bucket = S3BlobStore(settings.storage[5:].split("/")[0], "team", client=moto_s3.client())
    assert sorted(bucket.list_digests()) == sorted(f.digest for f in manifest.files)
    paths = {path for _, path in recorder.requests}
    assert "/api/blobs/presign" in paths
    assert paths <= {"/api/runners/register", "/api/blobs/presign", "/api/blobs/missing"}


def test_presigning_needs_a_token(s3_server: tuple[ServerSettings, Recorder]) -> None:
    settings, _ = s3_server
    body = {"digests": ["0" * 64], "method": "PUT"}

    response = httpx.post(f"{settings.url}/api/blobs/presign", json=body)

    assert response.status_code == 401
    assert "urls" not in response.text


@pytest.mark.anyio
async def test_claims_tell_runners_to_use_presigned_urls_with_s3(
    settings: ServerSettings, moto_s3: MotoServer, s3_bucket: str
) -> None:
    store = S3BlobStore(s3_bucket, client=moto_s3.client())
    async with running_context(settings, blobs=store, background=False) as ctx:
        runner_id = await register(ctx)
        await runs.submit_run(ctx, request=submission())
        assignment = await claims.try_claim(ctx, runner_id=runner_id)

    assert assignment is not None
    assert assignment.storage == StorageAccess(kind="presigned")
