"""Secrets: encrypted at rest, never answered, handed to claimed jobs, checked at submit."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dstack.models.job import JobSpec
from dstack.models.protocol import JobSubmission
from dstack.server.app import create_app, running_context
from dstack.server.context import ServerContext
from dstack.server.db.engine import create_engine
from dstack.server.services import claims
from dstack.server.services import runs as run_service
from dstack.server.services import secrets as secret_service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import FakeClock, register, submission

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": "Bearer secret-token"}
VALUE = "hf_Zq8vX3-very-secret"


@pytest.fixture
async def http(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, blobs=MemoryBlobStore())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def using_secret(command: str, env: dict[str, str] | None = None) -> JobSubmission:
    spec = JobSpec(provider="bash", commands=[command], env=env or {}, workflow_name="train")
    return JobSubmission(workflow_name="train", spec=spec)


async def test_values_are_never_answered(http: httpx.AsyncClient) -> None:
    body = {"name": "HF_TOKEN", "value": VALUE}
    answers = [
        await http.post("/api/secrets", json=body, headers=AUTH),
        await http.put("/api/secrets", json={**body, "value": VALUE + "2"}, headers=AUTH),
        await http.get("/api/secrets", headers=AUTH),
    ]
    run = submission(using_secret("echo ${{ secrets.HF_TOKEN }}")).model_dump(mode="json")
    answers.append(await http.post("/api/runs", json=run, headers=AUTH))
    answers.append(await http.get("/api/runs", headers=AUTH))

    assert [a.status_code for a in answers] == [201, 200, 200, 201, 200]
    assert all(VALUE not in a.text for a in answers)
    assert [s["name"] for s in answers[2].json()] == ["HF_TOKEN"]
    assert set(answers[0].json()) == {"name", "repo_id", "created_at", "updated_at"}


async def test_values_are_encrypted_in_the_database(
    http: httpx.AsyncClient, settings: ServerSettings
) -> None:
    await http.post("/api/secrets", json={"name": "DB_PASSWORD", "value": VALUE}, headers=AUTH)

    engine = create_engine(settings.resolved_database_url())
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT name, value FROM secrets"))).all()
    finally:
        await engine.dispose()
    assert [name for name, _ in rows] == ["DB_PASSWORD"]
    assert VALUE not in rows[0][1]
    if settings.database_url is None:  # SQLite: not in the files either, WAL included
        stored = b"".join(p.read_bytes() for p in settings.server_dir.glob("db.sqlite*"))
        assert b"DB_PASSWORD" in stored
        assert VALUE.encode() not in stored
    key_file = settings.server_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_add_update_delete_answer_conflicts_and_misses(http: httpx.AsyncClient) -> None:
    body = {"name": "KEY", "value": "v"}
    assert (await http.post("/api/secrets", json=body, headers=AUTH)).status_code == 201
    assert (await http.post("/api/secrets", json=body, headers=AUTH)).status_code == 409
    assert (await http.delete("/api/secrets/KEY", headers=AUTH)).status_code == 204
    assert (await http.delete("/api/secrets/KEY", headers=AUTH)).status_code == 404
    assert (await http.put("/api/secrets", json=body, headers=AUTH)).status_code == 404
    bad = await http.post("/api/secrets", json={"name": "my-key", "value": "v"}, headers=AUTH)
    assert bad.status_code == 422
    assert "invalid secret name 'my-key'" in bad.json()["error"]["message"]


async def test_a_run_referring_to_an_unknown_secret_is_refused(http: httpx.AsyncClient) -> None:
    job = using_secret("echo hi", env={"TOKEN": "${{ secrets.MISSING_ONE }}"})

    response = await http.post(
        "/api/runs", json=submission(job).model_dump(mode="json"), headers=AUTH
    )

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "the workflow refers to secret 'MISSING_ONE', which does not exist",
        "hint": "add it: dstack secrets add MISSING_ONE",
    }
    assert (await http.get("/api/runs", headers=AUTH)).json() == []


async def test_claimed_jobs_get_the_global_secrets(ctx: ServerContext) -> None:
    await secret_service.add_secret(ctx, name="HF_TOKEN", value=VALUE)
    await secret_service.add_secret(ctx, name="OTHER", value="o")
    await run_service.submit_run(
        ctx, request=submission(using_secret("login ${{ secrets.HF_TOKEN }}"))
    )
    runner_id = await register(ctx)

    assignment = await claims.try_claim(ctx, runner_id=runner_id)

    assert assignment is not None
    assert assignment.secrets == {"HF_TOKEN": VALUE, "OTHER": "o"}
    assert assignment.spec.commands == ["login ${{ secrets.HF_TOKEN }}"]


async def test_another_key_cannot_read_the_values(
    settings: ServerSettings, clock: FakeClock
) -> None:
    settings.secret_key = "key one"
    async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
        await secret_service.add_secret(ctx, name="A", value=VALUE)
        assert await secret_service.secret_values(ctx, repo_id="r") == {"A": VALUE}
    settings.secret_key = "key two"
    async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
        assert await secret_service.secret_values(ctx, repo_id="r") == {}
        assert [s.name for s in await secret_service.list_secrets(ctx, repo_id=None)] == ["A"]


def test_references_are_found_in_commands_and_env_values() -> None:
    spec = JobSpec(
        provider="bash",
        commands=["echo ${{secrets.A}} ${{ secrets.B }}", "echo $C ${{ variables.D }}"],
        env={"E": "x-${{ secrets.E }}-y"},
    )

    assert secret_service.references([spec]) == {"A", "B", "E"}


def test_settings_without_a_key_keep_one_file(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path)
    token = secret_service.cipher(settings).encrypt(b"v")

    assert secret_service.cipher(ServerSettings(home=tmp_path)).decrypt(token) == b"v"
