"""Upgrade a database to the newest schema with the migrations shipped in the package."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from dstack.errors import ServerError
from dstack.server.db.engine import safe_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


# Any constant: servers sharing a PostgreSQL database migrate it one at a time.
_MIGRATION_LOCK_ID = 0x647374616B


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied. Safe to call on every start, also by several
    servers starting at once on one PostgreSQL database. An unreachable database raises
    `ServerError` naming it (password hidden).

    A database already at the newest revision (nearly every start) is told by one query,
    without alembic (about 0.2 s to import and to read every migration script)."""
    try:
        async with engine.begin() as connection:
            if await connection.run_sync(at_head):
                return
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
            await connection.run_sync(_upgrade)
    except (OSError, OperationalError, InterfaceError) as exc:
        raise _unreachable(engine, exc) from exc


def _unreachable(engine: AsyncEngine, exc: Exception) -> ServerError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return ServerError(
        f"cannot open the database {safe_url(str(engine.url))}: {reason}",
        hint="check --database-url and that the database server is running",
    )


_REVISION_FILE = re.compile(r"v(\d{4})_\w+\.py")


def head_revision() -> str:
    """The newest revision shipped: migrations are `versions/vNNNN_name.py` with revision
    `NNNN`, each following the one before (a test holds alembic to the same answer)."""
    numbers = [
        match.group(1)
        for path in (MIGRATIONS_DIR / "versions").iterdir()
        if (match := _REVISION_FILE.fullmatch(path.name))
    ]
    return max(numbers)


def at_head(connection: Connection) -> bool:
    """Whether the database's schema is the newest one (False also when it has none)."""
    if not connection.dialect.has_table(connection, "alembic_version"):
        return False
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return list(versions) == [head_revision()]


def _upgrade(connection: Connection) -> None:
    # alembic: ~0.2 s of a start, only when there is something to migrate
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py runs the migrations on this connection instead of opening its own.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
