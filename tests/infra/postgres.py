"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` from the Debian packages.

Runs as the `postgres` user when the tests run as root (PostgreSQL refuses root), listens on
a free loopback port with its socket in a temp dir, trusts every local connection, and is
fast rather than durable (no fsync).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(Exception):
    """No PostgreSQL binaries, or the cluster would not start."""


def find_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/*/bin` that has `initdb`."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise PostgresUnavailable("no initdb under /usr/lib/postgresql (apt install postgresql)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One cluster; `start()` then `url(db)`, `create_database`, `drop_database`, `stop()`."""

    def __init__(self) -> None:
        self.bin = find_bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="dstack-pg-"))
        self.data = self.base / "data"
        self.port = free_port()

    def start(self) -> None:
        if os.getuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._as_owner("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                       "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        log = str(self.base / "postgres.log")
        self._as_owner("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable):
            self._as_owner("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create `name` (from `template` when given; it must have no open connections)."""
        suffix = f" TEMPLATE {template}" if template else ""
        self.sql(f"CREATE DATABASE {name}{suffix}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def sql(self, statement: str) -> None:
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        subprocess.run(
            [*psql, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", statement],
            check=True,
            capture_output=True,
        )

    def _as_owner(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.base)
        if result.returncode != 0:
            log = self.base / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"{program} failed: {result.stderr.strip()}\n{tail}")
