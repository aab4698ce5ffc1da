"""The SQLite engine: statements run on the event loop's thread, WAL readers do not wait."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from dstack.server.db.engine import create_engine

pytestmark = pytest.mark.anyio


async def test_statements_run_without_a_worker_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1), (2)"))
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT x FROM t ORDER BY x"))).all()
        assert set(threading.enumerate()) == before
    finally:
        await engine.dispose()
    assert [x for (x,) in rows] == [1, 2]


async def test_a_reader_sees_the_last_commit_while_a_writer_is_open(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
        async with engine.begin() as writer, engine.connect() as reader:
            await writer.execute(text("INSERT INTO t VALUES (1)"))
            seen = (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one()
        async with engine.connect() as reader:
            after = (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one()
    finally:
        await engine.dispose()
    assert (seen, after) == (0, 1)
