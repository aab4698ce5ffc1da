"""Statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def dialect_insert(dialect: str, entity: Any) -> PgInsert | SqliteInsert:
    """An INSERT for `entity` (ORM class or table) that offers `on_conflict_do_nothing` /
    `on_conflict_do_update` in the dialect at hand."""
    if dialect == "postgresql":
        return pg_insert(entity)
    return sqlite_insert(entity)
