"""Upgrade a database to the newest schema with the migrations shipped in the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
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
    `ServerError` naming it (password hidden)."""
    try:
        async with engine.begin() as connection:
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


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py runs the migrations on this connection instead of opening its own.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
