"""Repository scope: a user limited to repository X never reaches what belongs to Y — cache
hits, planted imports, tags, secrets, listings — through the HTTP API, as an attacker would.

Each attack of issue #13 is a test here, most with a second, varied form.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from tests.infra.fixtures import postgres
from tests.server.conftest import (
    anyio_backend,
    art_job,
    db_url,
    register,
    run_to_done,
    stored_manifest,
    submission,
)

from dstack.models.artifacts import JobArtifacts
from dstack.models.job import Job, JobSpec, JobStatus
from dstack.models.protocol import ImportRunRequest, JobSubmission, SubmitRunRequest
from dstack.models.repo import RepoRef
from dstack.models.run import Run
from dstack.models.workflow import DepKind, DepRef
from dstack.server.app import create_app, running_context
from dstack.server.context import ServerContext
from dstack.server.services import claims
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

__all__ = ["anyio_backend", "db_url", "postgres"]  # fixtures, shared with tests/server

pytestmark = pytest.mark.anyio
ADMIN = "secret-token"
X, Y = "github.com/acme/x", "github.com/acme/y"


@dataclass
class Team:
    """A team server: its HTTP API, its context (to play the runner), and Bob, who may see
    repository X only."""

    http: httpx.AsyncClient
    ctx: ServerContext
    bob: str

    async def call(self, method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self.http.request(method, url, headers=headers, **kwargs)

    async def post(self, url: str, token: str, body: BaseModel) -> httpx.Response:
        return await self.call("POST", url, token, json=body.model_dump(mode="json"))

    async def submit(self, token: str, request: SubmitRunRequest) -> dict[str, Any]:
        response = await self.post("/api/runs", token, request)
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        return run

    async def run_done(self, token: str, request: SubmitRunRequest) -> str:
        """Submit and let a runner finish every job; the run's name."""
        runner = await register(self.ctx, name=uuid.uuid4().hex[:8])
        run = await self.submit(token, request)
        await run_to_done(self.ctx, runner)
        assert (await self.run(run["name"]))["status"] == "done"
        return str(run["name"])

    async def run(self, name: str) -> dict[str, Any]:
        response = await self.call("GET", f"/api/runs/{name}", ADMIN)
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
async def team(tmp_path: Path, db_url: str | None) -> AsyncIterator[Team]:
    settings = ServerSettings(home=tmp_path / "home", token=ADMIN, database_url=db_url)
    blobs = MemoryBlobStore()
    app = create_app(settings, blobs=blobs)
    # Without the scheduler loop (the test plays the runner; nothing runs by itself).
    async with running_context(settings, blobs=blobs, background=False) as ctx:
        app.state.ctx = ctx
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = {"name": "bob", "repos": [X]}
            created = await http.post(
                "/api/users", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert created.status_code == 201, created.text
            yield Team(http, ctx, created.json()["token"])


def chain(repo: str) -> SubmitRunRequest:
    """`prepare`, then `train` with `deps: - workflow: prepare`: the same code in X and Y."""
    return submission(art_job("prepare"), art_job("train", deps=[0]), repo_id=repo)


def single(repo: str, **kwargs: Any) -> SubmitRunRequest:
    return submission(art_job("train"), repo_id=repo).model_copy(update=kwargs)


def depending_on(repo: str, ref: DepRef) -> SubmitRunRequest:
    return submission(art_job("use", external=[ref], code_key="tree-2"), repo_id=repo)


# --- cache hits -------------------------------------------------------------------------------
async def test_a_run_of_another_repository_is_no_cache_hit(team: Team) -> None:
    theirs = await team.run_done(ADMIN, single(Y))

    mine = await team.submit(team.bob, single(X))
    artifacts = await team.call("GET", f"/api/runs/{mine['name']}/artifacts", team.bob)

    assert [(j["status"], j["reused_from"]) for j in mine["jobs"]] == [("submitted", None)]
    assert theirs not in artifacts.text
    assert artifacts.json() == []


async def test_a_workflow_dependency_chain_of_another_repository_is_no_cache_hit(
    team: Team,
) -> None:
    theirs = await team.run_done(ADMIN, chain(Y))

    mine = await team.submit(team.bob, chain(X))

    assert [j["reused_from"] for j in mine["jobs"]] == [None, None]
    assert mine["status"] != "done"
    assert (await team.run(theirs))["status"] == "done"


async def test_plan_names_no_run_of_another_repository(team: Team) -> None:
    theirs = await team.run_done(ADMIN, chain(Y))
    body = chain(X).model_dump(mode="json")

    plan = await team.call("POST", "/api/runs/plan", team.bob, json=body)
    their_plan = await team.post("/api/runs/plan", ADMIN, chain(Y))

    assert plan.status_code == 200, plan.text
    assert theirs not in plan.text
    assert [j["cached_from"] for j in plan.json()["jobs"]] == [None, None]
    assert [j["cached_from"] for j in their_plan.json()["jobs"]] == [theirs, theirs]
    keys = {j["cache_key"] for j in plan.json()["jobs"]}
    assert keys.isdisjoint(j["cache_key"] for j in their_plan.json()["jobs"])


# --- imports ----------------------------------------------------------------------------------
def finished_run(
    ctx: ServerContext, repo: str, *, name: str, cache_key: str | None, user: str = "admin"
) -> ImportRunRequest:
    """A finished run to `POST /api/runs/import`, with one artifact whose blob is stored."""
    now = datetime.now(UTC)
    spec = JobSpec(provider="bash", commands=["python train.py"], workflow_name="train")
    job = Job(
        id=uuid.uuid4().hex,
        run_name=name,
        index=0,
        workflow_name="train",
        spec=spec,
        status=JobStatus.DONE,
        cache_key=cache_key,
        submitted_at=now,
        finished_at=now,
    )
    run = Run(
        name=name,
        repo=RepoRef(repo_id=repo, tree="0" * 40),
        workflow_name="train",
        user=user,
        submitted_at=now,
        status=JobStatus.DONE,
        jobs=[job],
    )
    manifest = stored_manifest(ctx.blobs, "out", b"poisoned weights")
    artifacts = [
        JobArtifacts(job_id=job.id, run_name=name, workflow_name="train", manifests=[manifest])
    ]
    return ImportRunRequest(run=run, artifacts=artifacts)


async def test_an_import_cannot_plant_a_cache_hit_for_another_repository(team: Team) -> None:
    planned = await team.post("/api/runs/plan", ADMIN, single(Y))
    their_key = planned.json()["jobs"][0]["cache_key"]
    planted = finished_run(team.ctx, X, name="planted-run-1", cache_key=their_key, user="alice")

    imported = await team.post("/api/runs/import", team.bob, planted)
    theirs = await team.submit(ADMIN, single(Y))

    assert imported.status_code == 201, imported.text
    assert imported.json()["user"] == "bob"  # not the `alice` the request claimed
    assert imported.json()["jobs"][0]["cache_key"] is None
    assert [(j["status"], j["reused_from"]) for j in theirs["jobs"]] == [("submitted", None)]


async def test_an_import_is_never_a_cache_hit_even_in_its_own_repository(team: Team) -> None:
    planned = await team.post("/api/runs/plan", team.bob, single(X))
    key = planned.json()["jobs"][0]["cache_key"]
    planted = finished_run(team.ctx, X, name="planted-run-1", cache_key=key)

    imported = await team.post("/api/runs/import", team.bob, planted)
    again = await team.submit(team.bob, single(X))

    assert imported.status_code == 201, imported.text
    assert again["jobs"][0]["reused_from"] is None


async def test_an_import_into_a_repository_out_of_reach_is_refused(team: Team) -> None:
    planted = finished_run(team.ctx, Y, name="planted-run-1", cache_key=None)

    refused = await team.post("/api/runs/import", team.bob, planted)

    assert refused.status_code == 404
    assert (await team.run("planted-run-1"))["error"]["code"] == "not_found"


async def test_an_import_reusing_an_existing_job_id_or_run_name_is_refused(team: Team) -> None:
    theirs = await team.run_done(ADMIN, single(Y))
    their_job = (await team.run(theirs))["jobs"][0]["id"]
    same_id = finished_run(team.ctx, X, name="planted-run-1", cache_key=None)
    same_id.run.jobs[0].id = their_job
    same_id.artifacts[0].job_id = their_job
    same_name = finished_run(team.ctx, X, name=theirs, cache_key=None)

    by_id = await team.post("/api/runs/import", team.bob, same_id)
    by_name = await team.post("/api/runs/import", team.bob, same_name)

    assert (by_id.status_code, by_name.status_code) == (409, 409)
    assert by_id.json()["error"]["message"] == f"a job with id {their_job} already exists here"
    after = await team.run(theirs)
    assert (after["repo"]["repo_id"], len(after["jobs"])) == (Y, 1)
    assert (await team.run("planted-run-1"))["error"]["code"] == "not_found"


async def test_imported_jobs_belong_to_the_imported_run_whatever_they_say(team: Team) -> None:
    theirs = await team.run_done(ADMIN, single(Y))
    planted = finished_run(team.ctx, X, name="planted-run-1", cache_key=None)
    planted.run.jobs[0].run_name = theirs  # attach a job to their run?

    imported = await team.post("/api/runs/import", team.bob, planted)

    assert imported.status_code == 201, imported.text
    assert [j["run_name"] for j in imported.json()["jobs"]] == ["planted-run-1"]
    assert len((await team.run(theirs))["jobs"]) == 1


async def test_the_same_import_again_is_a_no_op_for_its_importer_only(team: Team) -> None:
    planted = finished_run(team.ctx, X, name="planted-run-1", cache_key=None)
    body = planted.model_dump(mode="json")

    first = await team.call("POST", "/api/runs/import", team.bob, json=body)
    again = await team.call("POST", "/api/runs/import", team.bob, json=body)
    by_admin = await team.call("POST", "/api/runs/import", ADMIN, json=body)

    assert (first.status_code, again.status_code, by_admin.status_code) == (201, 201, 409)


# --- tags -------------------------------------------------------------------------------------
async def tags_of(team: Team, repo: str) -> dict[str, str]:
    listed = await team.call("GET", "/api/tags", ADMIN, params={"repo_id": repo})
    return {t["name"]: t["run_name"] for t in listed.json()}


async def test_run_with_a_tag_does_not_move_another_repositorys_tag(team: Team) -> None:
    theirs = await team.run_done(ADMIN, single(Y, tag="best"))

    mine = await team.run_done(team.bob, single(X, tag="best"))

    assert await tags_of(team, Y) == {"best": theirs}
    assert await tags_of(team, X) == {"best": mine}


async def test_tags_add_and_delete_reach_only_the_own_repository(team: Team) -> None:
    theirs = await team.run_done(ADMIN, single(Y, tag="best"))
    mine = await team.run_done(team.bob, single(X))

    added = await team.call("POST", "/api/tags", team.bob, json={"name": "best", "run_name": mine})
    on_theirs = await team.call(
        "POST", "/api/tags", team.bob, json={"name": "v2", "run_name": theirs}
    )
    delete_theirs = await team.call("DELETE", "/api/tags/best", team.bob, params={"repo_id": Y})
    assert await tags_of(team, X) == {"best": mine}
    delete_mine = await team.call("DELETE", "/api/tags/best", team.bob, params={"repo_id": X})

    assert [added.status_code, on_theirs.status_code, delete_theirs.status_code] == [201, 404, 404]
    assert delete_mine.status_code == 204
    assert await tags_of(team, Y) == {"best": theirs}
    assert await tags_of(team, X) == {}


@pytest.mark.parametrize(
    "ref",
    [DepRef(kind=DepKind.TAG, tag="best"), DepRef(kind=DepKind.TAG, workflow="train", tag="best")],
    ids=["tag", "workflow:tag"],
)
async def test_a_tag_dependency_resolves_in_the_runs_repository(team: Team, ref: DepRef) -> None:
    await team.run_done(ADMIN, single(Y, tag="best"))
    only_theirs = await team.post("/api/runs", team.bob, depending_on(X, ref))
    mine = await team.run_done(team.bob, single(X, tag="best"))

    run = await team.submit(team.bob, depending_on(X, ref))
    runner = await register(team.ctx, name="deps")
    assignment = await claims.try_claim(team.ctx, runner_id=runner)

    assert only_theirs.status_code == 404
    assert only_theirs.json()["error"]["message"] == "tag 'best' does not exist"
    assert assignment is not None
    assert assignment.run_name == run["name"]
    assert [d.run_name for d in assignment.deps] == [mine]


async def test_a_dependency_naming_another_repository_is_refused(team: Team) -> None:
    ref = DepRef(kind=DepKind.TAG, tag="best", repo="acme/y")

    refused = await team.post("/api/runs", team.bob, depending_on(X, ref))

    assert refused.status_code == 400
    assert "another repository" in refused.json()["error"]["message"]


# --- secrets ----------------------------------------------------------------------------------
async def add_secret(team: Team, token: str, name: str, value: str, repo: str | None) -> int:
    body = {"name": name, "value": value, "repo_id": repo}
    return (await team.call("POST", "/api/secrets", token, json=body)).status_code


@pytest.fixture
async def secrets(team: Team) -> Team:
    """Y's `Y_TOKEN`, a global `SHARED` and Y's own `SHARED`; X's `X_TOKEN` (added by Bob)."""
    for name, value, repo in [("Y_TOKEN", "y", Y), ("SHARED", "g", None), ("SHARED", "ys", Y)]:
        assert await add_secret(team, ADMIN, name, value, repo) == 201
    assert await add_secret(team, team.bob, "X_TOKEN", "x", X) == 201
    return team


async def test_secrets_are_listed_per_repository(secrets: Team) -> None:
    team = secrets
    mine = await team.call("GET", "/api/secrets", team.bob, params={"repo_id": X})
    theirs = await team.call("GET", "/api/secrets", team.bob, params={"repo_id": Y})
    global_ = await team.call("GET", "/api/secrets", team.bob)
    as_admin = await team.call("GET", "/api/secrets", ADMIN, params={"repo_id": Y})

    assert [(s["name"], s["repo_id"]) for s in mine.json()] == [("X_TOKEN", X)]
    assert (theirs.status_code, global_.status_code) == (404, 403)
    assert "Y_TOKEN" not in theirs.text + global_.text
    assert [(s["name"], s["repo_id"]) for s in as_admin.json()] == [
        ("SHARED", None),
        ("SHARED", Y),
        ("Y_TOKEN", Y),
    ]


async def test_secrets_of_another_repository_or_global_cannot_be_changed(secrets: Team) -> None:
    team = secrets
    update = {"name": "Y_TOKEN", "value": "stolen", "repo_id": Y}
    answers = [
        await team.call("PUT", "/api/secrets", team.bob, json=update),
        await team.call("PUT", "/api/secrets", team.bob, json={**update, "repo_id": None}),
        await team.call("DELETE", "/api/secrets/Y_TOKEN", team.bob, params={"repo_id": Y}),
        await team.call("DELETE", "/api/secrets/SHARED", team.bob),
        await team.call("POST", "/api/secrets", team.bob, json={**update, "name": "NEW"}),
        await team.call("POST", "/api/secrets", team.bob, json={**update, "repo_id": None}),
    ]
    # Bob's own repository has no Y_TOKEN: the name elsewhere does not matter.
    own = await team.call("PUT", "/api/secrets", team.bob, json={**update, "repo_id": X})

    assert [a.status_code for a in answers] == [404, 403, 404, 403, 404, 403]
    assert own.status_code == 404
    listed = await team.call("GET", "/api/secrets", ADMIN, params={"repo_id": Y})
    assert [s["name"] for s in listed.json()] == ["SHARED", "SHARED", "Y_TOKEN"]
    assert await team_secrets(team, Y) == {"Y_TOKEN": "y", "SHARED": "ys"}


async def team_secrets(team: Team, repo: str) -> dict[str, str]:
    """What a claimed job of `repo` gets."""
    spec = JobSpec(provider="bash", commands=["env"], workflow_name="env")
    request = SubmitRunRequest(
        repo=RepoRef(repo_id=repo, tree="0" * 40),
        workflow_name="env",
        jobs=[JobSubmission(workflow_name="env", spec=spec)],
    )
    await team.submit(ADMIN, request)
    assignment = await claims.try_claim(team.ctx, runner_id=await register(team.ctx, name=repo[-1]))
    assert assignment is not None
    return assignment.secrets


async def test_a_job_gets_its_repositorys_secrets_and_the_global_ones(secrets: Team) -> None:
    assert await team_secrets(secrets, X) == {"X_TOKEN": "x", "SHARED": "g"}
    assert await team_secrets(secrets, Y) == {"Y_TOKEN": "y", "SHARED": "ys"}


async def test_a_run_may_refer_only_to_secrets_its_jobs_get(secrets: Team) -> None:
    job = art_job("train", env={"T": "${{ secrets.Y_TOKEN }}"})

    refused = await secrets.post("/api/runs", secrets.bob, submission(job, repo_id=X))

    assert refused.status_code == 400
    assert "Y_TOKEN" in refused.json()["error"]["message"]


# --- listings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["runs", "tags"])
async def test_listings_are_of_one_repository_and_every_one_is_for_admins(
    team: Team, what: str
) -> None:
    theirs = await team.run_done(ADMIN, single(Y, tag="best"))
    mine = await team.run_done(team.bob, single(X, tag="mine"))
    url = f"/api/{what}"

    own = await team.call("GET", url, team.bob, params={"repo_id": X, "all": True})
    other = await team.call("GET", url, team.bob, params={"repo_id": Y, "all": True})
    every = await team.call("GET", url, team.bob, params={"all": True})
    as_admin = await team.call("GET", url, ADMIN, params={"all": True})

    key = "name" if what == "runs" else "run_name"
    assert [r[key] for r in own.json()] == [mine]
    assert (other.status_code, every.status_code) == (404, 403)
    assert theirs not in other.text + every.text
    assert every.json()["error"]["message"].startswith(f"listing the {what} of every repository")
    assert sorted(r[key] for r in as_admin.json()) == sorted([mine, theirs])
