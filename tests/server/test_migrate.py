"""Migrations: a database at the newest revision is recognised without alembic."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from dstack.server.db.engine import create_engine
from dstack.server.db.migrate import MIGRATIONS_DIR, at_head, head_revision, upgrade_to_head

pytestmark = pytest.mark.anyio


def test_the_head_read_from_file_names_is_alembics() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_a_database_is_at_head_only_once_migrated(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.connect() as connection:
            assert not await connection.run_sync(at_head)
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(at_head)
        await upgrade_to_head(engine)  # nothing to do, and nothing done wrong
    finally:
        await engine.dispose()
