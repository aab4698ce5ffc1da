"""`dstack push` interrupted part-way, then run again: it resumes, sending only what the
remote lacks, and the remote run's artifacts equal the local ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import ADMIN_TOKEN, BrokenLinkStore, TeamServer
from tests.e2e.test_remote import run_name_in

from dstack.api.client import Client
from dstack.api.transfer import Side
from dstack.cli.runcopy import copy_run
from dstack.errors import StorageError
from dstack.server.local import ensure_local_server
from dstack.storage.local import LocalBlobStore

FILES = 30
SENT_BEFORE_FAILURE = 12


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TeamServer]:
    team = TeamServer(home=tmp_path / "server-home")
    try:
        team.start()
        yield team
    finally:
        team.stop()


@pytest.fixture
def user(tmp_path: Path, server: TeamServer) -> Iterator[Env]:
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    assert env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
    try:
        yield env
    finally:
        _stop_server(env.home)


def test_an_interrupted_push_resumes_with_the_missing_blobs(
    user: Env, server: TeamServer, tmp_path: Path
) -> None:
    user.workflows(
        f"""
        workflows:
          - name: make
            provider: bash
            commands:
              - mkdir -p out && for i in $(seq 1 {FILES}); do echo "part $i" > out/$i.txt; done
            artifacts: [out]
        """
    )
    user.commit("workflows")
    made = user.dstack("run", "make")
    assert made.code == 0, made
    name = run_name_in(made.out + made.err)
    url, token = ensure_local_server(user.home)
    source = Side(Client(url, token), LocalBlobStore(user.home / "server" / "blobs"))
    broken = BrokenLinkStore(server.url, ADMIN_TOKEN, uploads=SENT_BEFORE_FAILURE)
    target = Side(Client(server.url, ADMIN_TOKEN), broken)

    try:
        with pytest.raises(StorageError):
            copy_run(source, target, name)
    finally:
        source.client.close()
        target.client.close()
        broken.close()

    assert user.dstack("ps", name, "--remote").code == 1  # no run there yet
    resumed = user.dstack("push", name, "--remote")
    assert resumed.code == 0, resumed
    left = FILES - SENT_BEFORE_FAILURE
    assert f"{left} blob(s) copied" in resumed.out
    assert f"{SENT_BEFORE_FAILURE} already there" in resumed.out
    here, there = tmp_path / "here", tmp_path / "there"
    assert user.dstack("cp", name, "out", str(here)).code == 0
    assert user.dstack("cp", name, "out", str(there), "--remote").code == 0
    assert sorted(p.name for p in there.iterdir()) == sorted(p.name for p in here.iterdir())
    assert len(list(here.iterdir())) == FILES
    for path in here.iterdir():
        assert (there / path.name).read_bytes() == path.read_bytes()
