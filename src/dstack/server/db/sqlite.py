"""SQLite for the async engine, run on the event loop's own thread.

SQLAlchemy's asyncio layer needs a driver that says it is async; `aiosqlite` is one, but it
runs every call (cursor, execute, fetch, close, commit, rollback) on a worker thread and hands
each result back through the event loop: several thread hops per statement, each costing far
more than the statement (a primary-key lookup takes microseconds), and most of a busy
server's time. This dialect is the standard `pysqlite` one declared async: SQLAlchemy runs it
in its greenlet as usual, and the calls simply complete without suspending.

That is sound because nothing makes a statement wait for long: the server is the only client
of its SQLite file, its write transactions take turns (`ServerContext.transaction`), and in
WAL mode readers never wait for a writer. A statement holds the loop only while SQLite works
on it, as any CPU work in a coroutine does.

What it relies on beyond SQLAlchemy's documented API, and why `pyproject.toml` keeps
SQLAlchemy below the next minor version: `AsyncConnection.execute` calls the cursor's
`_async_soft_close()` (the hook of SQLAlchemy's own adapted cursors), and it refuses a
statement during which the driver never awaited (`greenlet_spawn(_require_await=True)`).
`tests/server/test_sqlite_driver_fence.py` checks exactly these and fails with a message
saying so when a SQLAlchemy release changes them. The rest is the public dialect API
(`is_async`, `get_pool_class`, `create_connect_args`, `do_execute*`, `registry.register`)
and `sqlalchemy.util.await_` (2.0: `await_only`). Measured against SQLAlchemy's
`sqlite+aiosqlite` (README.md, "Development"), this driver takes about half the server CPU
per job.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it `await_only`
    from sqlalchemy.util import await_only as await_

DRIVER = "dstack_inline"


class _Cursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """`AsyncConnection.execute` calls this on an async driver's cursor before it hands
        the buffered result back; a sqlite3 cursor's rows need no such step."""


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _Cursor)


async def _ready() -> None:
    """Awaited by every statement, without suspending: `AsyncConnection.execute` refuses a
    driver that never awaits (its sign of a sync driver used by mistake)."""


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """`pysqlite`, usable by `create_async_engine`."""

    driver = DRIVER
    is_async = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # The async pool waits for a free connection without blocking the loop.
        if is_file_db(url):
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = super().create_connect_args(url)
        kwargs["factory"] = _Connection
        # A pooled connection may be opened on one event loop's thread and used on another
        # (tests run several loops); one coroutine uses a connection at a time.
        kwargs["check_same_thread"] = False
        return args, kwargs

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        await_(_ready())
        cursor.execute(statement, parameters)

    def do_executemany(
        self, cursor: Any, statement: Any, parameters: Any, context: Any = None
    ) -> None:
        await_(_ready())
        cursor.executemany(statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: Any, context: Any = None) -> None:
        await_(_ready())
        cursor.execute(statement)


def is_file_db(url: URL) -> bool:
    """Whether `url` names a database file (not `:memory:`, not `?mode=memory`): its
    connections are pooled; an in-memory database lives in one connection."""
    return bool(url.database) and url.database != ":memory:" and url.query.get("mode") != "memory"


def register() -> None:
    """Make `sqlite+dstack_inline://` URLs known to SQLAlchemy (idempotent)."""
    registry.register(f"sqlite.{DRIVER}", __name__, "InlineSQLiteDialect")
