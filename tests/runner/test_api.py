from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from dstack.errors import AuthError, ConflictError, ServerError, StorageError
from dstack.models.job import JobStatus
from dstack.models.protocol import HeartbeatRequest, JobStatusUpdate, RegisterRunnerRequest
from dstack.models.resources import HostResources
from dstack.runner.api import HttpRunnerApi


def _api(handler: object, **kwargs: object) -> HttpRunnerApi:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return HttpRunnerApi("http://server", "tok", transport=transport, **kwargs)  # type: ignore[arg-type]


def test_claim_returns_none_on_204_and_sends_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    assert _api(handler).claim("r1", 0.1) is None
    assert seen[0].url.path == "/api/runners/r1/claim"
    assert seen[0].headers["Authorization"] == "Bearer tok"


def test_errors_are_translated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(401, json={"error": {"code": "auth", "message": "bad token"}})
        return httpx.Response(409, json={"error": {"code": "conflict", "message": "not yours"}})

    api = _api(handler)
    with pytest.raises(AuthError):
        api.heartbeat("r1", HeartbeatRequest(running_jobs=[]))
    with pytest.raises(ConflictError, match="not yours"):
        api.post_status("j1", JobStatusUpdate(status=JobStatus.RUNNING))


def test_connection_errors_are_retried_then_reported() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"runner_id": "r9"})

    sleeps: list[float] = []
    api = _api(handler, sleep=sleeps.append, retry_for=60)
    from dstack.models.protocol import RegisterRunnerRequest
    from dstack.models.resources import HostResources

    request = RegisterRunnerRequest(
        name="n",
        host="h",
        resources=HostResources(cpus=1, memory_mib=1, disk_mib=1),
        executors=["process"],
    )
    assert api.register(request).runner_id == "r9"
    assert sleeps == [0.5, 1.0]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ServerError, match="cannot reach the server at http://server"):
        _api(down, sleep=lambda s: None, retry_for=0).register(request)


def test_downloaded_blobs_are_verified(tmp_path: Path) -> None:
    good = b"the bundle"
    digest = hashlib.sha256(good).hexdigest()
    served = {"body": good}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=served["body"])

    api = _api(handler)
    api.get_blob(digest, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == good

    served["body"] = b"the bundle, corrupted"
    with pytest.raises(StorageError, match=digest):
        api.get_blob(digest, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == [tmp_path / "ok"]


def test_job_reports_carry_the_runner_id_after_registration() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/register"):
            return httpx.Response(200, json={"runner_id": "r42"})
        return httpx.Response(204)

    api = _api(handler)
    api.register(
        RegisterRunnerRequest(
            name="box",
            host="h",
            resources=HostResources(cpus=1, memory_mib=1, disk_mib=1),
            executors=["process"],
        )
    )
    api.post_status("j1", JobStatusUpdate(status=JobStatus.RUNNING))
    assert seen[-1].headers["X-Dstack-Runner-Id"] == "r42"
