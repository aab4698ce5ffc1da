"""`RunnerClient` on a scripted server (httpx.MockTransport): the credential it sends, the
one error decoding, retries, verified downloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dstack.api.runner import RunnerClient
from dstack.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ServerError,
    ServerUnreachableError,
    StorageError,
)
from dstack.models.artifacts import StorageAccess
from dstack.models.digests import digest_bytes
from dstack.models.job import JobStatus
from dstack.models.protocol import HeartbeatRequest, JobStatusUpdate, RegisterRunnerRequest
from dstack.models.resources import HostResources

Handler = Callable[[httpx.Request], httpx.Response]
REQUEST = RegisterRunnerRequest(
    name="box",
    host="h",
    resources=HostResources(cpus=1, memory_mib=1, disk_mib=1),
    executors=["process"],
)


def _api(handler: Handler, **kwargs: object) -> RunnerClient:
    transport = httpx.MockTransport(handler)
    return RunnerClient("http://server", "reg", transport=transport, **kwargs)  # type: ignore[arg-type]


def _server(answer: dict[str, object], seen: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/register"):
            return httpx.Response(200, json=answer)
        if request.url.path.endswith("/claim"):
            return httpx.Response(204)
        if request.method == "HEAD":
            return httpx.Response(200, headers={"content-length": "0"})
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, json={})
        return httpx.Response(204)

    return handler


def _exercise(api: RunnerClient) -> None:
    api.heartbeat(HeartbeatRequest(running_jobs=[]))
    assert api.claim(0.1) is None
    api.post_status("j1", JobStatusUpdate(status=JobStatus.RUNNING))
    api.blob_store(StorageAccess()).exists(digest_bytes(b"x"))


def test_after_registering_every_request_carries_the_runners_own_credential() -> None:
    seen: list[httpx.Request] = []
    answer: dict[str, object] = {"runner_id": "r1", "runner_token": "own", "server_id": "s1"}
    api = _api(_server(answer, seen))

    assert api.register(REQUEST).runner_token == "own"
    _exercise(api)

    assert seen[0].headers["Authorization"] == "Bearer reg"
    assert {r.headers["Authorization"] for r in seen[1:]} == {"Bearer own"}
    assert seen[1].url.path == "/api/runners/r1/heartbeat"
    assert api.credential == "own"
    assert not any("x-dstack-runner-id" in r.headers for r in seen)


def test_a_stored_credential_registers_and_then_carries_every_request() -> None:
    seen: list[httpx.Request] = []
    api = _api(_server({"runner_id": "r1", "runner_token": None, "server_id": "s1"}, seen))

    api.register(REQUEST, credential="stored")
    _exercise(api)

    assert {r.headers["Authorization"] for r in seen} == {"Bearer stored"}


def test_a_refused_credential_changes_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401)

    api = _api(handler)
    with pytest.raises(AuthError, match="rejected the token"):
        api.register(REQUEST, credential="revoked")
    assert api.credential == "reg"


def test_a_new_registration_without_a_credential_is_refused() -> None:
    seen: list[httpx.Request] = []
    api = _api(_server({"runner_id": "r42"}, seen))

    with pytest.raises(ServerError, match="without a credential"):
        api.register(REQUEST)
    assert api.credential == "reg"


def test_errors_are_decoded_once_for_every_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(200, json={"runner_id": "r1", "runner_token": "own"})
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(401)
        if request.url.path.endswith("/logs"):
            return httpx.Response(
                403, json={"error": {"code": "forbidden", "message": "not yours"}}
            )
        if request.url.path.endswith("/claim"):
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "who?"}})
        return httpx.Response(409, json={"error": {"code": "conflict", "message": "done"}})

    api = _api(handler)
    api.register(REQUEST)
    with pytest.raises(AuthError, match="--token"):
        api.heartbeat(HeartbeatRequest(running_jobs=[]))
    with pytest.raises(NotFoundError, match="who"):
        api.claim(0.1)
    with pytest.raises(ConflictError, match="done"):
        api.post_status("j1", JobStatusUpdate(status=JobStatus.RUNNING))
    from dstack.models.protocol import LogBatch

    with pytest.raises(ForbiddenError, match="not yours"):  # a ConflictError: forget the job
        api.post_logs("j1", LogBatch(lines=[]))


def test_connection_errors_are_retried_then_reported() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"runner_id": "r9", "runner_token": "own"})

    sleeps: list[float] = []
    api = _api(handler, sleep=sleeps.append, retry_for=60)
    assert api.register(REQUEST).runner_id == "r9"
    assert sleeps == [0.5, 1.0]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ServerUnreachableError, match="cannot reach the dstack server at"):
        _api(down, sleep=lambda s: None, retry_for=0).register(REQUEST)


def test_downloaded_blobs_are_verified(tmp_path: Path) -> None:
    good = b"the bundle"
    digest = digest_bytes(good)
    served = {"body": good}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(200, json={"runner_id": "r1", "runner_token": "own"})
        headers = {"content-length": str(len(served["body"]))}
        return httpx.Response(200, content=served["body"], headers=headers)

    api = _api(handler)
    api.register(REQUEST)
    api.get_blob(digest, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == good

    served["body"] = b"the bundle, corrupted"
    with pytest.raises(StorageError, match=digest):
        api.get_blob(digest, tmp_path / "bad")
    assert [p.name for p in tmp_path.iterdir()] == ["ok"]


def test_the_register_body_is_the_request() -> None:
    seen: list[httpx.Request] = []
    api = _api(_server({"runner_id": "r1", "runner_token": "own"}, seen))
    api.register(REQUEST)
    assert json.loads(seen[0].content)["name"] == "box"
