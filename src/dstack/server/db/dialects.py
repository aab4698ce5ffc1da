"""Statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert


def dialect_insert(dialect: str, entity: Any) -> PgInsert | SqliteInsert:
    """An INSERT for `entity` (ORM class or table) that offers `on_conflict_do_nothing` /
    `on_conflict_do_update` in the dialect at hand. PostgreSQL's module (about 0.15 s to
    import) is loaded by its engine, never by a server on SQLite."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # see above

        return pg_insert(entity)
    return sqlite_insert(entity)
