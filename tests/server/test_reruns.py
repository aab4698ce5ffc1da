"""Re-runs: a run submitted again as it was — same code, jobs and resolved external deps —
through the service and `POST /api/runs/{name}/rerun` (who may, which runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from dstack.errors import ConflictError
from dstack.models.job import JobStatus
from dstack.models.workflow import DepKind, DepRef
from dstack.server.app import create_app
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow, RunRow
from dstack.server.services import reruns, runs
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import art_job, register, run_to_done, submission

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": "Bearer secret-token"}
REPO = "github.com/acme/models"
OTHER = "github.com/acme/other"


async def finished(ctx: ServerContext, name: str, content: bytes = b"weights") -> None:
    await run_to_done(ctx, await register(ctx), content=content)
    assert (await runs.get_run(ctx, name=name)).status is JobStatus.DONE


async def externals(ctx: ServerContext, name: str) -> list[object]:
    async with ctx.read() as session:
        row = await session.get(JobRow, (await runs.get_run(ctx, name=name)).jobs[0].id)
        assert row is not None
        return list(row.external_artifacts or [])


async def test_a_rerun_gets_the_deps_the_original_got_even_after_the_tag_moved(
    ctx: ServerContext,
) -> None:
    tagged = submission(art_job("prepare")).model_copy(update={"tag": "data"})
    first = await runs.submit_run(ctx, request=tagged)
    await finished(ctx, first.name, b"v1")
    ref = DepRef(kind=DepKind.TAG, tag="data")
    train = await runs.submit_run(ctx, request=submission(art_job("train", external=[ref])))
    await finished(ctx, train.name)
    # the tag moves to another run of `prepare`
    moved = submission(art_job("prepare", code_key="tree-2")).model_copy(update={"tag": "data"})
    second = await runs.submit_run(ctx, request=moved)
    await finished(ctx, second.name, b"v2")

    again = await reruns.rerun(ctx, name=train.name, user="bob")

    assert await externals(ctx, again.name) == await externals(ctx, train.name)
    assert again.user == "bob"
    # same inputs: the cache applies, the original's results are reused
    assert again.status is JobStatus.DONE
    assert again.jobs[0].reused_from == train.name
    assert (await reruns.info(ctx, again.name)).of == train.name
    # a fresh submission resolves the tag again: other inputs, so it runs
    fresh = await runs.submit_run(ctx, request=submission(art_job("train", external=[ref])))
    assert fresh.jobs[0].reused_from is None


async def test_reload_runs_every_job_again(ctx: ServerContext) -> None:
    run = await runs.submit_run(ctx, request=submission(art_job("prepare")))
    await finished(ctx, run.name)

    again = await reruns.rerun(ctx, name=run.name, user="alice", reload=True)

    assert again.status is JobStatus.SUBMITTED
    assert again.jobs[0].reused_from is None
    assert [j.spec for j in again.jobs] == [j.spec for j in run.jobs]


async def test_a_run_without_a_kept_submission_is_refused(ctx: ServerContext) -> None:
    run = await runs.submit_run(ctx, request=submission(art_job("prepare")))
    async with ctx.transaction() as session:
        await session.execute(update(RunRow).values(submission=None))

    assert not (await reruns.info(ctx, run.name)).possible
    with pytest.raises(ConflictError):
        await reruns.rerun(ctx, name=run.name, user="alice")


@pytest.fixture
async def app(settings: ServerSettings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, blobs=MemoryBlobStore())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def new_user(http: httpx.AsyncClient, name: str, repos: list[str]) -> dict[str, str]:
    body = {"name": name, "is_admin": False, "repos": repos}
    answer = await http.post("/api/users", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


async def submit(http: httpx.AsyncClient, repo_id: str) -> str:
    body = submission(repo_id=repo_id).model_dump(mode="json")
    answer = await http.post("/api/runs", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    name: str = answer.json()["name"]
    return name


async def test_rerun_over_http(http: httpx.AsyncClient, app: FastAPI) -> None:
    mine = await submit(http, REPO)
    other = await submit(http, OTHER)
    bob = await new_user(http, "bob", [REPO])

    answer = await http.post(f"/api/runs/{mine}/rerun", headers=bob)

    assert answer.status_code == 201, answer.text
    new = answer.json()
    assert new["name"] != mine
    assert (new["user"], new["repo"]["repo_id"]) == ("bob", REPO)
    assert [j["spec"] for j in new["jobs"]] == [
        j["spec"] for j in (await http.get(f"/api/runs/{mine}", headers=ADMIN)).json()["jobs"]
    ]
    # another repository's run is not there for bob, as if it did not exist
    hidden = await http.post(f"/api/runs/{other}/rerun", headers=bob)
    assert hidden.status_code == 404
    assert (await http.post("/api/runs/nope-1/rerun", headers=ADMIN)).status_code == 404
    # no token, a wrong one, a runner's: refused; nothing was submitted
    assert (await http.post(f"/api/runs/{mine}/rerun")).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert (await http.post(f"/api/runs/{mine}/rerun", headers=wrong)).status_code == 401
    runner = {"Authorization": "Bearer runner-token"}
    assert (await http.post(f"/api/runs/{mine}/rerun", headers=runner)).status_code == 403
    listed = (await http.get("/api/runs", params={"all": True}, headers=ADMIN)).json()
    assert len(listed) == 3
    # a run with nothing kept to submit again: 409 with a hint
    ctx = app.state.ctx
    async with ctx.transaction() as session:
        await session.execute(update(RunRow).where(RunRow.name == mine).values(submission=None))
    refused = await http.post(f"/api/runs/{mine}/rerun", headers=ADMIN)
    assert refused.status_code == 409
    assert "dstack run" in refused.text
