"""Repository clone settings over HTTP: who may set and read them, that the secret never
comes back to users, and that only the runner holding a job gets it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.runner.git_http import GitHttp, bare_repo_from, serving
from tests.server.conftest import register_over_http, submission

from dstack.server.app import create_app
from dstack.server.db.models import RepoCredentialRow
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

pytestmark = pytest.mark.anyio
ADMIN = "admin-token-for-repos"
REPO = "127.0.0.1/models"
TOKEN = "ghp-secret-5b1e0c7d9a"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def app_http(tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN)
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


@pytest.fixture
def http(app_http: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_http[1]


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHttp]:
    import subprocess

    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "a"], check=True)
    root = tmp_path / "served"
    root.mkdir()
    bare_repo_from(work, root / "models.git")
    with serving(GitHttp(root, TOKEN)) as server:
        yield server


def body(url: str = "https://git.example/models.git", **extra: Any) -> dict[str, Any]:
    return {"repo_id": REPO, "url": url, "kind": "token", "secret": TOKEN, "check": False} | extra


async def new_user(http: httpx.AsyncClient, name: str, repos: list[str] | None) -> str:
    answer = await http.post(
        "/api/users", json={"name": name, "repos": repos}, headers=bearer(ADMIN)
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


async def test_without_a_token_401(http: httpx.AsyncClient) -> None:
    assert (await http.put("/api/repos/credentials", json=body())).status_code == 401
    answer = await http.get("/api/repos/credentials", params={"repo_id": REPO})
    assert answer.status_code == 401


async def test_a_user_without_access_to_the_repo_gets_403(http: httpx.AsyncClient) -> None:
    token = await new_user(http, "bob", repos=["github.com/other/repo"])
    answer = await http.put("/api/repos/credentials", json=body(), headers=bearer(token))
    assert answer.status_code == 403
    assert REPO in answer.json()["error"]["message"]
    answer = await http.get(
        "/api/repos/credentials", params={"repo_id": REPO}, headers=bearer(token)
    )
    assert answer.status_code == 403


async def test_the_secret_is_stored_encrypted_and_never_returned(
    app_http: tuple[Any, httpx.AsyncClient],
) -> None:
    app, http = app_http
    token = await new_user(http, "carol", repos=[REPO])
    answer = await http.put("/api/repos/credentials", json=body(), headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert TOKEN not in answer.text
    shown = await http.get(
        "/api/repos/credentials", params={"repo_id": REPO}, headers=bearer(ADMIN)
    )
    assert shown.status_code == 200
    assert TOKEN not in shown.text
    data = shown.json()
    assert (data["url"], data["kind"], data["created_by"]) == (
        "https://git.example/models.git",
        "token",
        "carol",
    )
    async with app.state.ctx.read() as session:
        row = (await session.scalars(select(RepoCredentialRow))).one()
    assert row.secret is not None
    assert TOKEN not in row.secret


async def test_nothing_stored_is_404_and_remove_forgets(http: httpx.AsyncClient) -> None:
    params = {"repo_id": REPO}
    assert (
        await http.get("/api/repos/credentials", params=params, headers=bearer(ADMIN))
    ).status_code == 404
    await http.put("/api/repos/credentials", json=body(), headers=bearer(ADMIN))
    deleted = await http.delete("/api/repos/credentials", params=params, headers=bearer(ADMIN))
    assert deleted.status_code == 204
    assert (
        await http.get("/api/repos/credentials", params=params, headers=bearer(ADMIN))
    ).status_code == 404


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"url": "https://user:pw@git.example/m.git"}, "carries a password"),
        ({"kind": "none"}, "takes no secret"),
        ({"secret": None}, "needs a secret"),
        ({"url": "--upload-pack=evil"}, "invalid repository URL"),
    ],
)
async def test_bad_requests_are_one_clear_line(
    http: httpx.AsyncClient, extra: dict[str, Any], says: str
) -> None:
    answer = await http.put("/api/repos/credentials", json=body(**extra), headers=bearer(ADMIN))
    assert answer.status_code == 400
    assert says in answer.json()["error"]["message"]


async def test_the_check_refuses_credentials_that_do_not_work(
    http: httpx.AsyncClient, git_server: GitHttp
) -> None:
    url = git_server.url("models.git")
    wrong = body(url=url, secret="not-the-token", check=True)
    answer = await http.put("/api/repos/credentials", json=wrong, headers=bearer(ADMIN))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert url in error["message"]
    assert "not-the-token" not in answer.text
    right = await http.put(
        "/api/repos/credentials", json=body(url=url, check=True), headers=bearer(ADMIN)
    )
    assert right.status_code == 200, right.text
    assert right.json()["warning"] is None


async def test_an_unreachable_host_is_only_a_warning(http: httpx.AsyncClient) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models.git"
    answer = await http.put(
        "/api/repos/credentials", json=body(url=url, check=True), headers=bearer(ADMIN)
    )
    assert answer.status_code == 200, answer.text
    assert "cannot reach" in answer.json()["warning"]


async def _claimed_job(http: httpx.AsyncClient) -> tuple[str, dict[str, str], str]:
    """(registration token, the runner's credential headers, job id) of a cloning run's job
    claimed by a runner."""
    await http.put("/api/repos/credentials", json=body(), headers=bearer(ADMIN))
    request = submission(repo_id=REPO)
    request.repo.clone_url = "https://git.example/models.git"
    submitted = await http.post(
        "/api/runs", json=request.model_dump(mode="json"), headers=bearer(ADMIN)
    )
    assert submitted.status_code in (200, 201), submitted.text
    token = (await http.post("/api/runners/tokens", headers=bearer(ADMIN))).json()["token"]
    runner_id, credential = await register_over_http(http, token)
    claimed = await http.post(
        f"/api/runners/{runner_id}/claim", json={"wait_seconds": 0}, headers=credential
    )
    assert claimed.status_code == 200, claimed.text
    return token, credential, claimed.json()["job_id"]


async def test_only_the_runner_holding_the_job_gets_the_secret(http: httpx.AsyncClient) -> None:
    token, mine, job_id = await _claimed_job(http)
    path = f"/api/jobs/{job_id}/repo-credentials"

    answer = await http.get(path, headers=mine)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "url": "https://git.example/models.git",
        "kind": "token",
        "secret": TOKEN,
    }
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers=bearer(ADMIN))).status_code == 403
    assert (await http.get(path, headers=bearer(token))).status_code == 403  # registration
    _, other = await register_over_http(http, token, name="r2")
    assert (await http.get(path, headers=other)).status_code == 403
    assert (await http.get("/api/jobs/nope/repo-credentials", headers=mine)).status_code == 404

    done = {"status": "done"}
    await http.post(f"/api/jobs/{job_id}/status", json=done, headers=mine)
    assert (await http.get(path, headers=mine)).status_code == 403  # finished: no more
