"""Declarative base and the column types every table shares."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Select, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out — also on SQLite, which drops zones."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


_Row = TypeVar("_Row", bound=Base)


async def get_row(session: AsyncSession, model: type[_Row], key: str) -> _Row | None:
    """`session.get(model, key)` for a table with a one-column primary key, for the busiest
    paths (a runner's claims and reports): its statement is built once, where `get` builds
    one and its cache key on every call (a third of the time it takes)."""
    row: _Row | None = await session.scalar(_by_key(model), {"key": key})
    return row


@functools.cache
def _by_key(model: type[_Row]) -> Select[_Row]:
    (column,) = model.__mapper__.primary_key
    return select(model).where(column == bindparam("key"))
