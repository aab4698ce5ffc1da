"""Several servers on one PostgreSQL database: claims never hand out a job twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.infra.fixtures import Postgres

from dstack.models.job import JobStatus
from dstack.server.app import running_context
from dstack.server.db.models import JobRow
from dstack.server.services import claims, runs
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

from .conftest import host, job, register, submission

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

RUNNERS = 6
CPUS = 4
JOBS = 30


async def test_two_servers_assign_every_job_exactly_once(
    postgres: Postgres, tmp_path: Path
) -> None:
    name, url = postgres.new_database()
    blobs = MemoryBlobStore()
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running_context(_settings(tmp_path / f"s{i}", url), blobs=blobs, background=False)
            )
            for i in range(2)
        ]
        runner_ids = [await register(servers[0], f"r{i}", host(cpus=CPUS)) for i in range(RUNNERS)]
        await runs.submit_run(servers[1], request=submission(*[job(cpu=1) for _ in range(JOBS)]))

        # Every runner asks both servers, many times at once, until nothing more is given:
        # more asks than jobs, and more jobs than the runners can hold.
        claimed: list[str] = []
        while True:
            attempts = [
                claims.try_claim(server, runner_id=r)
                for r in runner_ids
                for server in servers
                for _ in range(CPUS)
            ]
            got = [a.job_id for a in await asyncio.gather(*attempts) if a is not None]
            if not got:
                break
            claimed += got
        async with servers[0].transaction() as session:
            rows = (await session.scalars(select(JobRow))).all()
    postgres.drop(name)

    assert len(claimed) == len(set(claimed)) == RUNNERS * CPUS
    assigned = [r for r in rows if r.status == JobStatus.PROVISIONING.value]
    assert sorted(r.id for r in assigned) == sorted(claimed)
    assert len(rows) - len(assigned) == JOBS - RUNNERS * CPUS  # still waiting, unassigned
    assert Counter(r.runner_id for r in assigned) == dict.fromkeys(runner_ids, CPUS)


def _settings(home: Path, url: str) -> ServerSettings:
    return ServerSettings(home=home, token="secret-token", database_url=url)
