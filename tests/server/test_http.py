"""The HTTP surface: auth, error bodies, blobs, claim answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dstack.models.digests import digest_bytes
from dstack.server.app import create_app
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import register_over_http, submission

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": "Bearer secret-token"}


@pytest.fixture
async def http(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_health_needs_no_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/health")

    assert response.status_code == 200
    assert "version" in response.json()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret-token"}]
)
async def test_everything_else_needs_the_token(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/api/runs"), ("GET", "/api/runners"), ("HEAD", "/api/blobs/x")]:
        response = await http.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.content == b""


async def test_errors_have_code_message_and_hint(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/runs/missing-run-1", headers=AUTH)

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "run 'missing-run-1' not found",
            "hint": "see `dstack ps -a`",
        }
    }


async def test_invalid_body_is_a_422_with_the_same_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/runs", json={"jobs": []}, headers=AUTH)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


async def test_submit_returns_201_and_the_run(http: httpx.AsyncClient) -> None:
    body = submission().model_dump(mode="json")

    response = await http.post("/api/runs", json=body, headers=AUTH)

    assert response.status_code == 201
    # The scheduler runs alongside: the job may already wait for a runner.
    assert response.json()["jobs"][0]["status"] in ("submitted", "pending")


async def test_blobs_put_head_get_and_mismatch(http: httpx.AsyncClient) -> None:
    data = b"artifact bytes" * 10_000
    digest = digest_bytes(data)
    url = f"/api/blobs/{digest}"

    assert (await http.head(url, headers=AUTH)).status_code == 404
    assert (await http.put(url, content=data, headers=AUTH)).status_code == 204
    head = await http.head(url, headers=AUTH)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
    assert (await http.get(url, headers=AUTH)).content == data

    wrong = digest_bytes(b"other")
    response = await http.put(f"/api/blobs/{wrong}", content=data, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "storage"
    assert (await http.head(f"/api/blobs/{wrong}", headers=AUTH)).status_code == 404


async def test_claim_without_work_is_204(http: httpx.AsyncClient) -> None:
    runner_id, credential = await register_over_http(http, "runner-token")

    response = await http.post(
        f"/api/runners/{runner_id}/claim", json={"wait_seconds": 0}, headers=credential
    )

    assert response.status_code == 204


async def test_a_removed_runners_credential_is_refused(http: httpx.AsyncClient) -> None:
    runner_id, credential = await register_over_http(http, "runner-token")
    beat = f"/api/runners/{runner_id}/heartbeat"
    assert (await http.post(beat, json={"running_jobs": []}, headers=credential)).is_success

    removed = await http.delete("/api/runners/r1", headers=AUTH)
    again = await http.delete("/api/runners/r1", headers=AUTH)

    assert (removed.status_code, again.status_code) == (204, 404)
    response = await http.post(beat, json={"running_jobs": []}, headers=credential)
    assert (response.status_code, response.content) == (401, b"")


async def test_runs_listing_pages_by_keys_newest_first(http: httpx.AsyncClient) -> None:
    body = submission().model_dump(mode="json")
    names = []
    for _ in range(5):
        response = await http.post("/api/runs", json=body, headers=AUTH)
        assert response.status_code == 201
        names.append(response.json()["name"])
    newest_first = list(reversed(names))

    first = (await http.get("/api/runs", params={"limit": 2}, headers=AUTH)).json()
    last = first[-1]
    keys = {"limit": 2, "before_at": last["submitted_at"], "before_name": last["name"]}
    second = (await http.get("/api/runs", params=keys, headers=AUTH)).json()
    last = second[-1]
    keys = {"limit": 2, "before_at": last["submitted_at"], "before_name": last["name"]}
    third = (await http.get("/api/runs", params=keys, headers=AUTH)).json()

    assert [r["name"] for r in first + second + third] == newest_first
    assert [len(r["jobs"]) for r in first] == [1, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"before_at": "2026-01-01T00:00:00Z", "before_name": "a-b-1"},
        {"limit": 2, "before_name": "a-b-1"},
        {"limit": 0},
        {"limit": 1001},
    ],
)
async def test_a_bad_runs_page_is_refused(http: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await http.get("/api/runs", params=params, headers=AUTH)

    assert response.status_code in (400, 422)
    assert response.json()["error"]["message"]
