"""Engine set-up: SQLite in WAL mode with a busy timeout, on the event loop's thread;
PostgreSQL through asyncpg."""

from __future__ import annotations

import os
from typing import Any

import pydantic_core
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dstack.errors import ConfigError
from dstack.server.db import sqlite

# The async driver for each database a server supports; a URL naming none gets this one.
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_ALIASES = {"postgres": "postgresql"}


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url` (see `normalize_url`). SQLite connections get WAL, a busy
    timeout and FKs on; PostgreSQL connections are checked before use, so a database that
    restarted does not fail the next request."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        # `sqlite+aiosqlite` is how a URL names SQLite; the server runs it with its own
        # driver, on the event loop's thread (see `db/sqlite.py`).
        _private_file(make_url(url).database)
        sqlite.register()
        engine = create_async_engine(
            make_url(url).set(drivername=f"sqlite+{sqlite.DRIVER}"), **_JSON_CODEC
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, **_JSON_CODEC
    )


def _to_json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


# JSON columns (specs, histories) are encoded and decoded by pydantic's Rust codec: the
# standard library's is most of the cost of reading a listing's rows.
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": _to_json,
    "json_deserializer": pydantic_core.from_json,
}


def normalize_url(url: str) -> str:
    """`postgres://`, `postgresql://` and `sqlite://` get their async driver; a URL with
    another database or driver raises `ConfigError` naming what is supported."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _unsupported(url) from None
    name, _, given_driver = parsed.drivername.partition("+")
    backend = _ALIASES.get(name, name)
    driver = _DRIVERS.get(backend)
    if driver is None or given_driver not in ("", driver):
        raise _unsupported(url)
    if parsed.drivername == f"{backend}+{driver}":
        return url
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _unsupported(url: str) -> ConfigError:
    return ConfigError(
        f"unsupported database URL '{safe_url(url)}'",
        hint="use postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB or sqlite+aiosqlite:///PATH",
    )


SQLITE_FILE_MODE = 0o600


def _private_file(database: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask: 0644), or
    make an existing one 0600; its `-wal` and `-shm` files get the same mode from SQLite.
    An in-memory database or a file that cannot be made (a missing folder) is left to
    SQLite, which reports it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT, SQLITE_FILE_MODE)
    except OSError:
        return
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, SQLITE_FILE_MODE)
    finally:
        os.close(fd)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (log long-polls) proceed while a runner writes; the busy timeout makes
    # concurrent writers wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
