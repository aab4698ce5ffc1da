"""Migration 0006 on a database that holds rows of the old schema: secrets become global,
tags keep their repository and become keyed by (repository, name); the server then works
with them (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.infra.fixtures import Postgres

from dstack.server.app import running_context
from dstack.server.db.engine import create_engine
from dstack.server.db.migrate import MIGRATIONS_DIR
from dstack.server.services import secrets as secret_service
from dstack.server.services import tags as tag_service
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

pytestmark = pytest.mark.anyio
WHEN = datetime(2023, 4, 1, 12, 0)
REPO = "github.com/acme/models"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no migration applied yet)."""
    if request.param == "sqlite":
        (tmp_path / "home" / "server").mkdir(parents=True)
        yield f"sqlite:///{tmp_path / 'home' / 'server' / 'old.sqlite'}"
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    name = f"mig_{uuid.uuid4().hex[:12]}"
    url = postgres.cluster.create_database(name)
    try:
        yield url
    finally:
        postgres.drop(name)


def _alembic(connection: sa.Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def _at_0005_with_old_rows(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic, "0005")
            await connection.run_sync(_old_rows)
    finally:
        await engine.dispose()


def _old_rows(connection: sa.Connection) -> None:
    meta = sa.MetaData()
    runs, jobs, tags, secrets = (
        sa.Table(name, meta, autoload_with=connection)
        for name in ("runs", "jobs", "tags", "secrets")
    )
    for name, repo in (("wise-owl-1", REPO), ("calm-cat-1", "github.com/other/repo")):
        connection.execute(
            runs.insert().values(
                name=name, name_prefix=name[:-2], name_counter=1, repo_id=repo,
                repo={"repo_id": repo, "tree": "0" * 40}, workflow_name="train",
                args=[], variables={}, user="alice", submitted_at=WHEN,
            )
        )  # fmt: skip
        connection.execute(
            jobs.insert().values(
                id=uuid.uuid4().hex, run_name=name, index=0, workflow_name="train",
                spec={"provider": "bash"}, deps=[], status="done", gpu_indexes=[],
                host_ports=[], history=[], version=1, submitted_at=WHEN,
            )
        )  # fmt: skip
    connection.execute(
        tags.insert(),
        [
            {"name": "best", "run_name": "wise-owl-1", "repo_id": REPO, "created_at": WHEN},
            {"name": "v1", "run_name": "calm-cat-1", "repo_id": "github.com/other/repo",
             "created_at": WHEN},
        ],
    )  # fmt: skip
    connection.execute(
        secrets.insert().values(name="HF_TOKEN", value="x", created_at=WHEN, updated_at=WHEN)
    )


@pytest.fixture
async def migrated(empty_url: str, tmp_path: Path) -> ServerSettings:
    await _at_0005_with_old_rows(empty_url)
    return ServerSettings(home=tmp_path / "home", token="secret-token", database_url=empty_url)


async def test_old_tags_and_secrets_survive_the_upgrade(migrated: ServerSettings) -> None:
    async with running_context(migrated, blobs=MemoryBlobStore(), background=False) as ctx:
        tags = {(t.repo_id, t.name, t.run_name) for t in await tag_service.list_tags(ctx)}
        [secret] = await secret_service.list_secrets(ctx, repo_id=None)
        # The same name now exists once per repository: a second `best` elsewhere is fine.
        async with ctx.transaction() as session:
            await session.execute(
                sa.text(
                    "INSERT INTO tags (repo_id, name, run_name, created_at) "
                    "VALUES ('github.com/other/repo', 'best', 'calm-cat-1', :at)"
                ),
                {"at": WHEN},
            )
        both = sorted(t.repo_id for t in await tag_service.list_tags(ctx) if t.name == "best")

    assert tags == {(REPO, "best", "wise-owl-1"), ("github.com/other/repo", "v1", "calm-cat-1")}
    assert (secret.name, secret.repo_id) == ("HF_TOKEN", None)
    assert both == [REPO, "github.com/other/repo"]


async def test_the_upgraded_tables_are_the_models_tables(migrated: ServerSettings) -> None:
    context = running_context(migrated, blobs=MemoryBlobStore(), background=False)
    async with context as ctx, ctx.connect() as connection:
        keys = await connection.run_sync(_primary_keys)

    assert keys["tags"] == ["repo_id", "name"]
    assert keys["secrets"] == ["repo_id", "name"]
    if migrated.database_url and migrated.database_url.startswith("postgres"):
        assert keys["names"] == ["secrets_pkey", "tags_pkey"]


def _primary_keys(connection: sa.Connection) -> dict[str, list[str]]:
    inspector = sa.inspect(connection)
    keys = {t: inspector.get_pk_constraint(t)["constrained_columns"] for t in ("tags", "secrets")}
    names = sorted(str(inspector.get_pk_constraint(t)["name"]) for t in ("tags", "secrets"))
    return {**keys, "names": names}
