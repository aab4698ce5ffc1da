"""What the UI tests share: a server with users, runs, logs and artifacts made through its
own API and services."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from dstack.models.artifacts import FileEntry, Manifest
from dstack.models.digests import digest_bytes
from dstack.models.job import JobSpec
from dstack.models.logs import LogStream
from dstack.models.protocol import JobSubmission, SubmitRunRequest
from dstack.models.repo import RepoRef
from dstack.server.context import ServerContext
from dstack.server.db.models import LogRow
from dstack.server.services import artifacts
from dstack.server.services import runs as run_service

ADMIN = "secret-token"
REPO_A = "github.com/acme/a"
REPO_B = "github.com/acme/b"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_user(http: httpx.AsyncClient, name: str, *, repos: list[str] | None = None) -> str:
    body = {"name": name, "is_admin": False, "repos": repos}
    response = await http.post("/api/users", json=body, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def submission(repo_id: str, *, jobs: int = 1, workflow: str = "train") -> SubmitRunRequest:
    repo = RepoRef(repo_id=repo_id, tree="0" * 40, commit="1" * 40, branch="main")
    spec = JobSpec(provider="bash", commands=["echo hi"], workflow_name=workflow)
    items = [
        JobSubmission(workflow_name=f"{workflow}{i}", spec=spec, deps=list(range(i)))
        for i in range(jobs)
    ]
    return SubmitRunRequest(repo=repo, workflow_name=workflow, jobs=items)


async def submit(http: httpx.AsyncClient, token: str, repo_id: str, **kwargs: object) -> str:
    body = submission(repo_id, **kwargs).model_dump(mode="json")  # type: ignore[arg-type]
    response = await http.post("/api/runs", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    name: str = response.json()["name"]
    return name


async def job_id(ctx: ServerContext, run_name: str, index: int = 0) -> str:
    run = await run_service.get_run(ctx, name=run_name)
    return run.jobs[index].id


async def add_logs(ctx: ServerContext, job: str, chunks: list[tuple[str, str]]) -> None:
    """Rows of output as a runner sends them: (stream, text) chunks, seq from 0."""
    now = ctx.clock()
    async with ctx.transaction() as session:
        session.add_all(
            LogRow(
                job_id=job,
                seq=seq,
                timestamp=now + timedelta(milliseconds=seq),
                stream=LogStream(stream).value,
                data=text,
            )
            for seq, (stream, text) in enumerate(chunks)
        )


async def add_artifact(ctx: ServerContext, job: str, path: str, files: dict[str, bytes]) -> None:
    entries = []
    for name, data in sorted(files.items()):
        digest = digest_bytes(data)
        ctx.blobs.put_bytes(data, digest)
        entries.append(FileEntry(path=name, size=len(data), mode=0o644, digest=digest))
    async with ctx.transaction() as session:
        await artifacts.put_manifest(session, job, Manifest(path=path, files=entries), ctx.clock())


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)
