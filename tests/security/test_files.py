"""Server and runner state is its user's alone: folders 0700, files 0600 (blobs 0400).

Attack of issue #13 ("Files"): the local server's SQLite file was 0644 and its blob store
0755, so every user of the machine read every log and artifact.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env

from dstack.models.digests import digest_bytes
from dstack.server.db.engine import create_engine
from dstack.server.settings import make_private_dir
from dstack.storage.local import LocalBlobStore


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Env]:
    env = make_env(tmp_path, "process")
    try:
        yield env
    finally:
        _stop_server(env.home)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _open_to_others(root: Path) -> list[str]:
    """`root` when others may enter it, and every file under it others may read or write
    (folders inside a 0700 one are out of their reach whatever their mode)."""
    found = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return [f"{p} {oct(_mode(p))}" for p in [root, *found] if _mode(p) & 0o077]


def test_the_local_servers_files_are_its_users_alone(user: Env, tmp_path: Path) -> None:
    user.workflows(
        """
        workflows:
          - name: out
            provider: bash
            commands:
              - mkdir -p out && echo weights > out/model.bin
            artifacts:
              - path: out
        """
    )
    user.commit()
    assert user.dstack("run", "out").code == 0

    server = user.home / "server"
    assert _mode(server) == 0o700
    assert _mode(server / "db.sqlite") == 0o600
    assert _mode(server / "blobs") == 0o700
    blobs = list((server / "blobs").glob("??/*"))
    assert blobs
    assert all(_mode(b) == 0o400 for b in blobs)
    assert _mode(user.home / "runner") == 0o700
    assert _open_to_others(server) == []


def test_state_left_open_by_an_older_version_is_closed_on_start(user: Env, tmp_path: Path) -> None:
    server = user.home / "server"
    server.mkdir(parents=True)
    os.chmod(user.home, 0o755)
    os.chmod(server, 0o755)
    database = server / "db.sqlite"
    database.touch(mode=0o644)
    database.chmod(0o644)

    assert user.dstack("ps").code == 0

    assert _mode(server) == 0o700
    assert _mode(database) == 0o600


def test_a_sqlite_database_is_created_0600_wherever_it_is(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        database = tmp_path / "elsewhere" / "team.db"
        database.parent.mkdir()
        engine = create_engine(f"sqlite:///{database}")

        async def touch() -> None:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await engine.dispose()

        asyncio.run(touch())
    finally:
        os.umask(old)
    assert _mode(database) == 0o600
    assert all(_mode(p) == 0o600 for p in database.parent.glob("team.db*"))


def test_a_blob_store_in_a_new_folder_creates_it_0700(tmp_path: Path) -> None:

    store = LocalBlobStore(tmp_path / "a" / "b" / "blobs")
    data = b"artifact"
    store.put_bytes(data, digest_bytes(data))

    assert _open_to_others(tmp_path / "a") == []


def test_make_private_dir_closes_an_open_folder(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)

    make_private_dir(folder)

    assert _mode(folder) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root")
def test_a_blob_adopted_from_a_job_users_file_is_the_stores(tmp_path: Path) -> None:

    from dstack.runner.jobuser import DEFAULT_JOB_USER, resolve_job_user

    user = resolve_job_user(DEFAULT_JOB_USER)
    assert user is not None
    store = LocalBlobStore(tmp_path / "blobs")
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    os.chown(artifact, user.uid, user.gid)

    digest = digest_bytes(b"weights")
    store.adopt(artifact, digest)

    blob = store.path(digest)
    assert blob.stat().st_uid == os.geteuid()
    assert _mode(blob) == 0o400
