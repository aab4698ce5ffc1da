"""S10's fill writes the rows it claims, shaped so the real server serves them, and the
requests it times answer with the right runs and lines — on SQLite and PostgreSQL. No
timing is asserted here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from benchmarks.scenarios.scale import JOBS_PER_RUN, LOG_BYTES_PER_JOB, REPOS, counts, fill, queries
from benchmarks.teamserver import Database, add_remote, database, serve
from pydantic import TypeAdapter
from sqlalchemy import select
from tests.infra.fixtures import Postgres, postgres

from dstack.models.run import Run
from dstack.server.app import running_context
from dstack.server.db.models import JobRow
from dstack.server.services import jobs, runs
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

__all__ = ["postgres"]  # the session's PostgreSQL cluster, for `db` below

RUNS = 400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        with database("sqlite", tmp_path / "db") as found:
            yield found
        return
    cluster: Postgres = request.getfixturevalue("postgres")
    name, url = cluster.new_database()
    try:
        yield Database("postgres", tmp_path / "db" / "home", url, lambda: 0)
    finally:
        cluster.drop(name)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with a remote, and the repo id `dstack ps` sends for it."""
    path = tmp_path / "repo"
    path.mkdir()
    for args in (["init", "-q"], ["remote", "add", "origin", "https://github.com/bench/s10.git"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    from dstack.cli.scope import current_repo_id  # the CLI's own answer

    return path, current_repo_id(path)


def test_the_fill_writes_the_rows_it_claims(db: Database, repo: tuple[Path, str]) -> None:
    filled = fill(db.resolved_url(), runs=RUNS, repo_id=repo[1])

    found = counts(db.resolved_url())

    assert (filled.runs, filled.jobs) == (RUNS, RUNS * JOBS_PER_RUN)
    assert found == {
        "runs": filled.runs,
        "jobs": filled.jobs,
        "logs": filled.logs,
        "log_bytes": filled.log_bytes,
    }
    assert filled.jobs <= filled.logs <= 3 * filled.jobs  # 1 to 3 chunks a job
    assert filled.log_bytes >= filled.jobs * (LOG_BYTES_PER_JOB - 2)
    assert len(set(filled.names)) == RUNS
    assert filled.submitted == sorted(filled.submitted)


def test_the_fill_keeps_each_jobs_api_json_as_the_server_does(
    db: Database, repo: tuple[Path, str]
) -> None:
    # Its finished jobs' kept JSON is the server's own: listings splice it, and read the
    # same as built from the columns.
    fill(db.resolved_url(), runs=120, repo_id=repo[1])
    settings = ServerSettings(home=db.home, database_url=db.resolved_url())
    kept, spliced, built = asyncio.run(_listings(settings))

    assert kept == 120 * JOBS_PER_RUN
    assert spliced == built
    assert len(json.loads(spliced)) == 50


async def _listings(settings: ServerSettings) -> tuple[int, str, str]:
    async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
        async with ctx.connect() as connection:
            texts = (await connection.scalars(select(JobRow.api_json))).all()
        kept = sum(jobs.kept_json(text) is not None for text in texts)
        spliced = await runs.list_runs_page_json(ctx, limit=50)
        models = await runs.list_runs_page(ctx, limit=50)
    return kept, spliced, TypeAdapter(list[Run]).dump_json(models).decode()


def test_the_measured_requests_answer_with_the_right_rows(
    db: Database, repo: tuple[Path, str], tmp_path: Path
) -> None:
    path, repo_id = repo
    filled = fill(db.resolved_url(), runs=RUNS, repo_id=repo_id)
    newest_first = list(reversed(filled.names))
    asked = queries(filled, 3)

    with serve(db) as server:
        answers = {what: [_get(server, *request) for request in asked[what]] for what in asked}
        logs = asked["logs first page"]
        logged = [_get(server, path.removesuffix("/logs"), {}) for path, _ in logs]
        home = tmp_path / "cli-home"
        add_remote(home, server)
        ps = subprocess.run(
            [sys.executable, "-m", "dstack", "ps", "--remote", "--json"],
            cwd=path,
            env={**os.environ, "DSTACK_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # dstack ps: the ten newest runs of its repository (one in REPOS), all finished.
    of_repo = [name for index, name in enumerate(filled.names) if index % REPOS == 0]
    expected_ps = list(reversed(of_repo))[:10]
    for answer in answers["dstack ps request"]:
        assert [run["name"] for run in answer] == expected_ps
        assert {len(run["jobs"]) for run in answer} == {JOBS_PER_RUN}
        assert all(run["repo"]["repo_id"] == repo_id for run in answer)
    assert ps.returncode == 0, ps.stderr
    assert [run["name"] for run in json.loads(ps.stdout)] == expected_ps
    # A run's first page of logs: every chunk of its jobs, in job order, and the run is over.
    for run, page in zip(logged, answers["logs first page"], strict=True):
        assert page["finished"] is True
        assert [event["job_id"] for event in page["events"]] == sorted(
            (event["job_id"] for event in page["events"]),
            key=[job["id"] for job in run["jobs"]].index,
        )
        assert {event["job_id"] for event in page["events"]} == {j["id"] for j in run["jobs"]}
        written = sum(len(event["data"]) for event in page["events"])
        assert written >= JOBS_PER_RUN * (LOG_BYTES_PER_JOB - 2)
    # The listing API: the newest 50, and the 50 right after a key deep in the history.
    for answer in answers["runs API first page"]:
        assert [run["name"] for run in answer] == newest_first[:50]
    for (_, params), answer in zip(
        asked["runs API deep page"], answers["runs API deep page"], strict=True
    ):
        after = newest_first.index(params["before_name"]) + 1
        assert [run["name"] for run in answer] == newest_first[after : after + 50]


def _get(server: Any, path: str, params: dict[str, Any]) -> Any:
    response = httpx.get(
        f"{server.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()
