"""A team server for the scenarios that compare databases (`--db sqlite,postgres`):
`dstack server` in the foreground, on SQLite in its home or on a throwaway PostgreSQL
cluster (`tests/infra/postgres.py`: `initdb` + `pg_ctl`, fsync off), stopped and removed
at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workspace import BenchError, dstack_command, user_environ

DATABASES = ("sqlite", "postgres")
TOKEN = "bench-admin-token"


def parse_databases(given: str) -> list[str]:
    """`"sqlite,postgres"` → ["sqlite", "postgres"]; `ValueError` naming an unknown one."""
    names = [name.strip().lower() for name in given.split(",") if name.strip()]
    unknown = [name for name in names if name not in DATABASES]
    if unknown or not names:
        shown = ", ".join(unknown) or "none"
        raise ValueError(f"unknown database {shown}; known: {', '.join(DATABASES)}")
    return names


@dataclass
class Database:
    """Where a server keeps its rows: `url` (None: SQLite in the server's home)."""

    kind: str
    home: Path
    url: str | None
    size: Callable[[], int]
    """Bytes on disk: SQLite's file and its WAL; PostgreSQL's `pg_database_size`."""

    def resolved_url(self) -> str:
        from dstack.server.settings import ServerSettings

        return self.url or ServerSettings(home=self.home).resolved_database_url()


@contextlib.contextmanager
def database(kind: str, root: Path) -> Iterator[Database]:
    """An empty database of `kind` under `root` (PostgreSQL: a cluster of its own)."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    if kind == "sqlite":
        from dstack.server.settings import ServerSettings, make_private_dir

        files = ServerSettings(home=home).files
        make_private_dir(files.database.parent)

        def sqlite_size() -> int:
            paths = [files.database, files.database.with_name(files.database.name + "-wal")]
            return sum(p.stat().st_size for p in paths if p.exists())

        yield Database(kind, home, None, sqlite_size)
        return
    from tests.infra.postgres import PostgresCluster, PostgresUnavailable

    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        cluster.stop()
        raise BenchError(f"PostgreSQL could not start: {exc}") from exc
    try:
        url = cluster.create_database("dstack_bench")

        def pg_size() -> int:
            return _pg_size(url)

        yield Database(kind, home, url, pg_size)
    finally:
        cluster.stop()


def _pg_size(url: str) -> int:
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def query() -> int:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return int(await connection.fetchval("SELECT pg_database_size(current_database())"))
        finally:
            await connection.close()

    return asyncio.run(query())


@dataclass
class Server:
    url: str
    token: str
    pid: int


@contextlib.contextmanager
def serve(
    db: Database, *, local_runner: bool = False, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`dstack server` on `db` until the block ends; ready when it answers `/api/health`.
    `env`: its environment (a workspace's, for the executor of its local runner)."""
    import httpx
    from tests.infra.postgres import free_port

    port = free_port()
    command = [*dstack_command(), "server", "--home", str(db.home), "--port", str(port)]
    if db.url:
        command += ["--database-url", db.url]
    if local_runner:
        command.append("--local-runner")
    env = dict(env or user_environ())
    env.update(DSTACK_HOME=str(db.home), DSTACK_SERVER_ADMIN_TOKEN=TOKEN)
    db.home.parent.mkdir(parents=True, exist_ok=True)
    log = (db.home.parent / "server.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                tail = (db.home.parent / "server.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"dstack server exited {proc.returncode}: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).is_success:
                    break
            if time.monotonic() > deadline:
                raise BenchError("dstack server did not answer within 120 s")
            time.sleep(0.2)
        yield Server(url, TOKEN, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def add_remote(home: Path, server: Server, name: str = "bench") -> None:
    """Make `server` the default remote of the CLI home `home` (`--remote` uses it)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.yaml"
    config.write_text(
        f"remotes:\n- name: {name}\n  url: {server.url}\n  token: {server.token}\ndefault: {name}\n"
    )
    os.chmod(config, 0o600)
