"""The fence around `server/db/sqlite.py`: the SQLAlchemy internals it runs on are still there.

The server's SQLite driver runs statements on the event loop's thread (about half the server
CPU per job of SQLAlchemy's `sqlite+aiosqlite`, see README.md "Development"); for that it
depends on two private rules of SQLAlchemy's asyncio layer, which is why `pyproject.toml`
pins SQLAlchemy below its next minor version. Each test checks one thing `sqlite.py` uses
and fails with a message saying what changed, so that raising the pin is one test run.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy
from sqlalchemy import text

from dstack.server.db import sqlite
from dstack.server.db.engine import create_engine

pytestmark = pytest.mark.anyio

FENCE = f"SQLAlchemy {sqlalchemy.__version__} changed what dstack/server/db/sqlite.py runs on"
HINT = (
    "keep SQLAlchemy within the pin of pyproject.toml, or adapt sqlite.py to this release "
    "(its docstring lists what it relies on) before raising the pin"
)


def _fail(what: str) -> NoReturn:
    pytest.fail(f"{FENCE}: {what}; {HINT}", pytrace=False)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("sqlalchemy.dialects.sqlite.pysqlite", "SQLiteDialect_pysqlite"),
        ("sqlalchemy.dialects", "registry"),
        ("sqlalchemy.pool", "AsyncAdaptedQueuePool"),
        ("sqlalchemy.pool", "StaticPool"),
        ("sqlalchemy.engine", "URL"),
    ],
)
def test_the_names_it_imports_exist(module: str, name: str) -> None:
    if not hasattr(importlib.import_module(module), name):
        _fail(f"{module}.{name} is gone")


def test_await_is_where_it_imports_it_from() -> None:
    util = importlib.import_module("sqlalchemy.util")
    if not (hasattr(util, "await_") or hasattr(util, "await_only")):
        _fail("sqlalchemy.util has neither await_ nor await_only")


@pytest.mark.parametrize(
    ("hook", "parameters"),
    [
        ("do_execute", ["self", "cursor", "statement", "parameters", "context"]),
        ("do_executemany", ["self", "cursor", "statement", "parameters", "context"]),
        ("do_execute_no_params", ["self", "cursor", "statement", "context"]),
        ("create_connect_args", ["self", "url"]),
    ],
)
def test_the_dialect_hooks_it_overrides_keep_their_parameters(
    hook: str, parameters: list[str]
) -> None:
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    method = getattr(SQLiteDialect_pysqlite, hook, None)
    if method is None:
        _fail(f"the SQLite dialect has no {hook}()")
    if list(inspect.signature(method).parameters) != parameters:
        _fail(f"{hook}() now takes {inspect.signature(method)}, sqlite.py overrides {parameters}")


def test_the_dialect_attributes_it_sets_are_still_read() -> None:
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    for name in ("is_async", "driver", "supports_statement_cache"):
        if not hasattr(SQLiteDialect_pysqlite, name):
            _fail(f"the SQLite dialect no longer has `{name}`")
    if not inspect.ismethod(getattr(SQLiteDialect_pysqlite, "get_pool_class", None)):
        _fail("get_pool_class is no longer a classmethod of dialects")


def test_async_cursors_are_still_soft_closed_by_that_name() -> None:
    """`AsyncConnection.execute` calls `_async_soft_close()` on the driver's cursor; sqlite.py's
    cursor defines it under the name SQLAlchemy's own adapted cursors use."""
    from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor

    if not hasattr(AsyncAdapt_dbapi_cursor, "_async_soft_close"):
        _fail("async cursors no longer have _async_soft_close(), which sqlite._Cursor defines")
    if not inspect.iscoroutinefunction(sqlite._Cursor._async_soft_close):
        _fail("sqlite._Cursor._async_soft_close must be a coroutine function")


def test_a_statement_must_still_await_and_await_still_satisfies_it() -> None:
    """`greenlet_spawn(_require_await=True)` refuses a driver that never awaited: each
    statement of sqlite.py awaits a coroutine that completes at once."""
    from sqlalchemy.util import greenlet_spawn

    if "_require_await" not in inspect.signature(greenlet_spawn).parameters:
        _fail("greenlet_spawn() has no _require_await any more (the rule sqlite._ready meets)")


async def test_statements_and_results_go_through_the_driver(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        if engine.dialect.driver != sqlite.DRIVER:
            _fail(f"the engine runs {engine.dialect.driver}, not {sqlite.DRIVER}")
        try:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE t (x INTEGER)"))
                await connection.execute(text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
                rows = (await connection.execute(text("SELECT x FROM t ORDER BY x"))).all()
        except (sqlalchemy.exc.SQLAlchemyError, AttributeError, TypeError) as exc:
            _fail(f"a statement fails: {type(exc).__name__}: {exc}")
    finally:
        await engine.dispose()
    assert [x for (x,) in rows] == [1, 2]


def test_a_memory_database_lives_in_one_connection() -> None:
    url = sqlalchemy.make_url
    assert sqlite.InlineSQLiteDialect.get_pool_class(url("sqlite:///:memory:")).__name__ == (
        "StaticPool"
    )
    assert sqlite.is_file_db(url("sqlite:///db.sqlite"))
    assert not sqlite.is_file_db(url("sqlite:///file:x?mode=memory&uri=true"))
    assert not sqlite.is_file_db(url("sqlite://"))
