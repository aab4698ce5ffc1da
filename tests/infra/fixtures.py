"""Session fixtures for real PostgreSQL, S3 and EC2 (moto_server); import them into a conftest.

Each starts its service once per session (and per conftest that imports it), only when a
test asks for it, and stops it at the end. Without the service a test is skipped — except
under CI=true, where it fails, so CI cannot go green by skipping the database suite.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Iterator

import pytest
from tests.infra.moto import CREDENTIALS, MotoServer, MotoUnavailable
from tests.infra.postgres import PostgresCluster, PostgresUnavailable

TEMPLATE = "dstack_template"


class Postgres:
    """A running cluster with a migrated template; `new_database()` clones it (fast)."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self._names = itertools.count()

    def new_database(self) -> tuple[str, str]:
        """(name, URL) of a fresh, migrated database."""
        name = f"test_{next(self._names)}"
        return name, self.cluster.create_database(name, template=TEMPLATE)

    def drop(self, name: str) -> None:
        self.cluster.drop_database(name)


def unavailable(what: str, why: object) -> None:
    """Skip, or fail under CI=true."""
    message = f"needs {what}: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: not skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        cluster = PostgresCluster()
        cluster.start()
    except PostgresUnavailable as exc:
        unavailable("PostgreSQL", exc)
    try:
        cluster.create_database(TEMPLATE)
        asyncio.run(_migrate(cluster.url(TEMPLATE)))
        yield Postgres(cluster)
    finally:
        cluster.stop()


async def _migrate(url: str) -> None:
    from dstack.server.db.engine import create_engine
    from dstack.server.db.migrate import upgrade_to_head

    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoServer]:
    """moto_server as S3; boto3 finds fake credentials in the environment meanwhile."""
    server = MotoServer()
    try:
        server.start()
    except MotoUnavailable as exc:
        unavailable("moto_server", exc)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def moto_ec2(moto_s3: MotoServer) -> MotoServer:
    """moto_server as EC2: the same server as S3 (one per session), fake credentials set."""
    return moto_s3


@pytest.fixture
def s3_bucket(moto_s3: MotoServer) -> str:
    """A new, empty bucket for this test."""
    name = f"dstack-test-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=name)
    return name
