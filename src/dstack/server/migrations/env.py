"""Alembic environment: migrations run on the connection handed in by `upgrade_to_head`.

For `alembic revision --autogenerate` during development, set `sqlalchemy.url` in a config
passed to alembic; the target metadata is the server's ORM models.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dstack.server.db import models  # noqa: F401  (registers the tables on Base.metadata)
from dstack.server.db.base import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as own:
        _run(own)


run_migrations()
