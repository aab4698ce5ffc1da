"""Who may call what: admin, user and runner tokens; revocation; repository visibility."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from dstack.models.digests import digest_bytes
from dstack.models.protocol import CreateUserRequest
from dstack.models.workflow import DepKind, DepRef
from dstack.server.app import create_app, running_context
from dstack.server.services import users as user_service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import register_over_http, submission

pytestmark = pytest.mark.anyio
ADMIN = "secret-token"
REGISTER = {
    "name": "r1",
    "host": "h",
    "resources": {"cpus": 1, "memory_mib": 1024, "disk_mib": 1024},
    "executors": ["process"],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def serving(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def http(tmp_path: Path, db_url: str | None) -> AsyncIterator[httpx.AsyncClient]:
    # No configured runner token: runner tokens come from the API, as on a team server.
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN, database_url=db_url)
    async for client in serving(settings):
        yield client


async def new_user(
    http: httpx.AsyncClient, name: str, *, repos: list[str] | None = None, admin: bool = False
) -> str:
    body = {"name": name, "is_admin": admin, "repos": repos}
    response = await http.post("/api/users", json=body, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def new_runner_token(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/runners/tokens", headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def statuses(http: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    """Status codes of: a user endpoint, an admin endpoint, a runner endpoint, a blob."""
    repo = {"repo_id": "github.com/acme/models"}
    return [
        (await http.get("/api/runs", params=repo, headers=headers)).status_code,
        (await http.get("/api/users", headers=headers)).status_code,
        (await http.post("/api/runners/register", json=REGISTER, headers=headers)).status_code,
        (await http.head(f"/api/blobs/{'0' * 64}", headers=headers)).status_code,
    ]


async def test_each_kind_of_token_reaches_only_its_endpoints(http: httpx.AsyncClient) -> None:
    user = await new_user(http, "bob")
    runner = await new_runner_token(http)

    assert await statuses(http, {}) == [401, 401, 401, 401]
    assert await statuses(http, bearer("wrong")) == [401, 401, 401, 401]
    assert await statuses(http, {"Authorization": ADMIN}) == [401, 401, 401, 401]
    assert await statuses(http, bearer(ADMIN)) == [200, 200, 403, 404]
    assert await statuses(http, bearer(user)) == [200, 403, 403, 404]
    # A registration token registers (a new runner, `r1`) and does nothing else.
    assert await statuses(http, bearer(runner)) == [403, 403, 200, 403]
    again = await http.post("/api/runners/register", json=REGISTER, headers=bearer(runner))
    assert again.status_code == 409  # `r1` is taken: a name is not an identity


async def test_401_says_nothing_and_403_says_why(http: httpx.AsyncClient) -> None:
    runner = await new_runner_token(http)

    refused = await http.get("/api/runs/some-run-1", headers=bearer("wrong"))
    forbidden = await http.get("/api/runs", headers=bearer(runner))

    assert (refused.status_code, refused.content) == (401, b"")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["message"] == (
        "a runner token is accepted only on runner endpoints"
    )


async def test_runner_endpoints_refuse_user_tokens(http: httpx.AsyncClient) -> None:
    user = await new_user(http, "bob")
    runner = await new_runner_token(http)
    runner_id, credential = await register_over_http(http, runner)
    assert await statuses(http, credential) == [403, 403, 200, 404]  # 200: a restart

    for token in (user, ADMIN, runner):
        claim = await http.post(
            f"/api/runners/{runner_id}/claim", json={"wait_seconds": 0}, headers=bearer(token)
        )
        report = await http.post(
            "/api/jobs/x/status", json={"status": "running"}, headers=bearer(token)
        )
        assert (claim.status_code, report.status_code) == (403, 403)
    claim = await http.post(
        f"/api/runners/{runner_id}/claim", json={"wait_seconds": 0}, headers=credential
    )
    assert claim.status_code == 204


async def test_a_deleted_user_is_refused_at_once(http: httpx.AsyncClient) -> None:
    token = await new_user(http, "bob")
    assert (await http.get("/api/users/me", headers=bearer(token))).json()["name"] == "bob"

    deleted = await http.delete("/api/users/bob", headers=bearer(ADMIN))

    assert deleted.status_code == 204
    assert (await http.get("/api/runs", headers=bearer(token))).status_code == 401
    names = [u["name"] for u in (await http.get("/api/users", headers=bearer(ADMIN))).json()]
    assert names == ["admin"]


async def test_a_replaced_runner_token_is_refused_at_once(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN)
    async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
        old = await user_service.create_runner_token(ctx, created_by="admin", label="gpu")
        assert await user_service.authenticate(ctx, old) is not None  # now remembered

        new = await user_service.create_runner_token(
            ctx, created_by="admin", label="gpu", replace=True
        )

        assert await user_service.authenticate(ctx, old) is None
        assert await user_service.authenticate(ctx, new) is not None


async def test_another_servers_revocation_holds_once_the_cache_expires(tmp_path: Path) -> None:
    # Two servers sharing one database: a deletion in one reaches the other's cache only
    # when its entry expires.
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN, auth_cache_seconds=0.2)
    async with (
        running_context(settings, blobs=MemoryBlobStore(), background=False) as here,
        running_context(settings, blobs=MemoryBlobStore(), background=False) as there,
    ):
        request = CreateUserRequest(name="bob", is_admin=False, repos=None)
        token = (await user_service.create_user(here, request=request)).token
        assert await user_service.authenticate(there, token) is not None

        await user_service.delete_user(here, name="bob")

        assert await user_service.authenticate(here, token) is None
        deadline = time.monotonic() + 30
        while await user_service.authenticate(there, token) is not None:
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)


async def test_user_names_are_unique_and_the_admin_stays(http: httpx.AsyncClient) -> None:
    await new_user(http, "bob")

    again = await http.post("/api/users", json={"name": "bob"}, headers=bearer(ADMIN))
    admin = await http.delete("/api/users/admin", headers=bearer(ADMIN))
    missing = await http.delete("/api/users/nobody", headers=bearer(ADMIN))

    assert again.status_code == 409
    assert admin.status_code == 400
    assert missing.status_code == 404
    assert (await http.get("/api/runs", headers=bearer(ADMIN))).status_code == 200


async def test_runs_record_who_submitted_them(http: httpx.AsyncClient) -> None:
    token = await new_user(http, "bob")
    body = submission().model_dump(mode="json")

    by_bob = await http.post("/api/runs", json=body, headers=bearer(token))
    by_admin = await http.post("/api/runs", json=body, headers=bearer(ADMIN))

    assert (by_bob.json()["user"], by_admin.json()["user"]) == ("bob", "admin")


async def test_a_user_with_repos_sees_only_runs_of_those(http: httpx.AsyncClient) -> None:
    mine, other = "github.com/acme/mine", "github.com/acme/other"
    token = await new_user(http, "bob", repos=[mine])
    runs = {}
    for repo in (mine, other):
        body = submission(repo_id=repo).model_dump(mode="json")
        runs[repo] = (await http.post("/api/runs", json=body, headers=bearer(ADMIN))).json()["name"]
    hidden = runs[other]

    listed = await http.get(
        "/api/runs", params={"all": True, "repo_id": mine}, headers=bearer(token)
    )
    assert [r["name"] for r in listed.json()] == [runs[mine]]
    theirs = await http.get("/api/runs", params={"repo_id": other}, headers=bearer(token))
    every = await http.get("/api/runs", params={"all": True}, headers=bearer(token))
    assert (theirs.status_code, every.status_code) == (404, 403)
    assert (await http.get(f"/api/runs/{runs[mine]}", headers=bearer(token))).status_code == 200
    answers = [
        await http.get(f"/api/runs/{hidden}", headers=bearer(token)),
        await http.post(f"/api/runs/{hidden}/stop", json={}, headers=bearer(token)),
        await http.delete(f"/api/runs/{hidden}", headers=bearer(token)),
        await http.get(f"/api/runs/{hidden}/logs", headers=bearer(token)),
        await http.get(f"/api/runs/{hidden}/artifacts", headers=bearer(token)),
    ]
    missing = await http.get("/api/runs/no-such-run-1", headers=bearer(token))
    assert [a.status_code for a in answers] == [404] * 5
    assert {a.json()["error"]["message"] for a in answers} == {f"run '{hidden}' not found"}
    assert missing.json()["error"]["message"] == "run 'no-such-run-1' not found"
    submit = await http.post(
        "/api/runs", json=submission(repo_id=other).model_dump(mode="json"), headers=bearer(token)
    )
    assert submit.status_code == 404
    everything = await http.get("/api/runs", params={"all": True}, headers=bearer(ADMIN))
    assert len(everything.json()) == 2
    untouched = await http.get(f"/api/runs/{hidden}", headers=bearer(ADMIN))
    assert untouched.json()["status"] in ("submitted", "pending")  # not stopped


async def test_first_start_generates_the_admin_token_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ServerSettings(home=tmp_path / "home")
    token_file = settings.server_dir / "admin_token"
    async for client in serving(settings):
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token in capsys.readouterr().out
        me = await client.get("/api/users/me", headers=bearer(token))
        assert me.json()["is_admin"] is True

    async for client in serving(settings):
        assert token not in capsys.readouterr().out  # printed once only
        assert token_file.read_text().strip() == token
        assert (await client.get("/api/users", headers=bearer(token))).status_code == 200


async def test_a_configured_admin_token_replaces_the_old_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async for client in serving(ServerSettings(home=home, token="first")):
        assert (await client.get("/api/users", headers=bearer("first"))).status_code == 200

    async for client in serving(ServerSettings(home=home, token="second")):
        assert (await client.get("/api/users", headers=bearer("first"))).status_code == 401
        assert (await client.get("/api/users", headers=bearer("second"))).status_code == 200
    assert not (home / "server" / "admin_token").exists()


def test_dstack_server_takes_the_admin_token_from_its_environment(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DSTACK_SERVER_ADMIN_TOKEN": "from-env-token"}
    command = [sys.executable, "-m", "dstack", "server", "--port", str(port)]
    command += ["--home", str(tmp_path / "home")]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        me = _when_up(url, "from-env-token")
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "admin"
        assert httpx.get(f"{url}/api/runs", headers=bearer("other")).status_code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "from-env-token" not in output
    assert not (tmp_path / "home" / "server" / "admin_token").exists()


def _when_up(url: str, token: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"{url}/api/users/me", headers=bearer(token), timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def upload_tag(http: httpx.AsyncClient, tag: str, repo_id: str) -> None:
    """A tagged run of `repo_id` made by the admin (`dstack tags add TAG -a PATH`)."""
    content = f"weights of {tag}".encode()
    digest = digest_bytes(content)
    put = await http.put(f"/api/blobs/{digest}", content=content, headers=bearer(ADMIN))
    assert put.status_code in (200, 201, 204), put.text
    file = {"path": "", "size": len(content), "mode": 0o644, "digest": digest}
    body = {
        "tag": tag,
        "repo": submission(repo_id=repo_id).repo.model_dump(mode="json"),
        "manifests": [{"path": "model.bin", "files": [file]}],
    }
    response = await http.post("/api/runs/upload", json=body, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text


async def test_a_user_with_repos_sees_and_uses_only_tags_of_those(
    http: httpx.AsyncClient,
) -> None:
    mine, other = "github.com/acme/mine", "github.com/acme/other"
    token = await new_user(http, "bob", repos=[mine])
    await upload_tag(http, "ours", mine)
    await upload_tag(http, "theirs", other)
    hidden_run = (await http.get("/api/tags", headers=bearer(ADMIN))).json()[0]["run_name"]

    listed = await http.get("/api/tags", params={"repo_id": mine}, headers=bearer(token))
    retag = await http.post(
        "/api/tags", json={"name": "copy", "run_name": hidden_run}, headers=bearer(token)
    )
    delete = await http.delete("/api/tags/theirs", params={"repo_id": other}, headers=bearer(token))
    dep = DepRef(kind=DepKind.TAG, tag="theirs")
    body = submission(repo_id=mine)
    body.jobs[0].external_deps.append(dep)
    submit = await http.post("/api/runs", json=body.model_dump(mode="json"), headers=bearer(token))
    prune = await http.delete(
        "/api/caches", params={"repo_id": other, "workflow": "train"}, headers=bearer(token)
    )

    assert [t["name"] for t in listed.json()] == ["ours"]
    assert [retag.status_code, delete.status_code, submit.status_code] == [404, 404, 404]
    assert submit.json()["error"]["message"] == "tag 'theirs' does not exist"
    assert prune.status_code == 404
    everything = await http.get("/api/tags", headers=bearer(ADMIN))
    assert sorted(t["name"] for t in everything.json()) == ["ours", "theirs"]
