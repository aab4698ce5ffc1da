"""`dstack pull` stopped part-way, then run again: nothing is registered here until every blob
is in, and the second pull fetches only the blobs the first one did not, so the pulled run's
artifacts equal the remote ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import ADMIN_TOKEN, BrokenLinkStore, TeamServer
from tests.e2e.test_remote import run_name_in

from dstack.api.client import Client
from dstack.api.transfer import Side
from dstack.cli.runcopy import copy_run
from dstack.errors import StorageError
from dstack.models.digests import digest_bytes
from dstack.server.local import ensure_local_server
from dstack.storage.local import LocalBlobStore

FILES = 30
READ_BEFORE_FAILURE = 12
TAG = "base"
# Alice and Bob work in clones of one repository: tags belong to a repository.
ORIGIN = "https://github.com/acme/models.git"


@dataclass(frozen=True)
class Published:
    """A team server holding run `name`, tagged `TAG`, whose `out` artifact is `files`."""

    server: TeamServer
    name: str
    files: dict[str, bytes]

    def blobs(self) -> LocalBlobStore:
        return LocalBlobStore(self.server.home / "server" / "blobs")

    def digests(self) -> list[str]:
        """The artifact blobs in the order a pull fetches them."""
        return sorted(digest_bytes(data) for data in self.files.values())


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """Alice makes a run of `FILES` artifact files here and pushes it, tagged, to the team."""
    tmp = tmp_path_factory.mktemp("team")
    server = TeamServer(home=tmp / "server-home")
    (tmp / "alice").mkdir()
    alice = make_env(tmp / "alice", "process")
    alice.git("remote", "add", "origin", ORIGIN)
    try:
        server.start()
        assert alice.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
        alice.workflows(
            f"""
            workflows:
              - name: make
                provider: bash
                commands:
                  - mkdir -p out && for i in $(seq 1 {FILES}); do echo "part $i" > out/$i.txt; done
                artifacts: [out]
            """
        )
        alice.commit("workflows")
        made = alice.dstack("run", "make", "-t", TAG)
        assert made.code == 0, made
        pushed = alice.dstack("push", f":{TAG}", "--remote")
        assert pushed.code == 0, pushed
        _stop_server(alice.home)
        files = {f"{i}.txt": f"part {i}\n".encode() for i in range(1, FILES + 1)}
        yield Published(server, run_name_in(made.out + made.err), files)
    finally:
        _stop_server(alice.home)
        server.stop()


@pytest.fixture
def bob(tmp_path: Path, published: Published) -> Iterator[Env]:
    """A teammate with no runs of his own, whose CLI points at the team server."""
    (tmp_path / "bob").mkdir()
    env = make_env(tmp_path / "bob", "process")
    env.git("remote", "add", "origin", ORIGIN)
    assert env.dstack("config", "--url", published.server.url, "--token", ADMIN_TOKEN).code == 0
    try:
        yield env
    finally:
        _stop_server(env.home)


def assert_nothing_pulled(bob: Env, published: Published) -> None:
    """No run and no tag here: a pull registers the run only once every blob is in."""
    missing = bob.dstack("ps", published.name)
    assert missing.code == 1, missing
    tags = bob.dstack("tags", "list", "--json")
    assert tags.code == 0, tags
    assert json.loads(tags.out) == []


def assert_resumes(bob: Env, published: Published, tmp_path: Path) -> None:
    """A second `dstack pull` fetches the blobs the first did not, and the run is here."""
    resumed = bob.dstack("pull", f":{TAG}", "--remote")
    assert resumed.code == 0, resumed
    assert resumed.err == "", resumed  # no bar (nor its blank line) when not a terminal
    assert f"Pulled run {published.name}: " in resumed.out
    assert f"{FILES - READ_BEFORE_FAILURE} blob(s) copied" in resumed.out
    assert f"{READ_BEFORE_FAILURE} already there" in resumed.out

    here, there = tmp_path / "here", tmp_path / "there"
    local = bob.dstack("cp", f":{TAG}", "out", str(here))
    assert local.code == 0, local
    remote = bob.dstack("cp", published.name, "out", str(there), "--remote")
    assert remote.code == 0, remote
    assert {p.name: p.read_bytes() for p in here.iterdir()} == published.files
    assert {p.name: p.read_bytes() for p in there.iterdir()} == published.files
    again = bob.dstack("pull", f":{TAG}", "--remote")
    assert again.code == 0, again
    assert "0 blob(s) copied" in again.out
    assert f"{FILES} already there" in again.out


def test_an_interrupted_pull_resumes_with_the_missing_blobs(
    bob: Env, published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(bob.repo)  # `:TAG` is a tag of the current repository
    url, token = ensure_local_server(bob.home)
    broken = BrokenLinkStore(published.server.url, ADMIN_TOKEN, downloads=READ_BEFORE_FAILURE)
    source = Side(Client(published.server.url, ADMIN_TOKEN), broken)
    target = Side(Client(url, token), LocalBlobStore(bob.home / "server" / "blobs"))

    try:
        with pytest.raises(StorageError, match="connection reset by peer"):
            copy_run(source, target, f":{TAG}")
    finally:
        source.client.close()
        target.client.close()
        broken.close()

    assert broken.downloads == 0  # it did get part-way
    assert_nothing_pulled(bob, published)
    assert_resumes(bob, published, tmp_path)


def test_a_failed_pull_says_so_in_one_line_and_a_second_one_finishes(
    bob: Env, published: Published, tmp_path: Path
) -> None:
    """The server cannot serve one blob (a disk or bucket hiccup) after a dozen went."""
    blobs = published.blobs()
    unreadable = published.digests()[READ_BEFORE_FAILURE]
    stored, aside = blobs.path(unreadable), tmp_path / "aside"
    stored.rename(aside)
    try:
        failed = bob.dstack("pull", f":{TAG}", "--remote")
    finally:
        aside.rename(stored)

    assert failed.code == 1, failed
    assert failed.out == ""
    assert "Traceback" not in failed.err
    lines = failed.err.splitlines()
    assert len([line for line in lines if line.startswith("Error: ")]) == 1, failed
    assert all(line.startswith(("Error: ", "Hint: ")) for line in lines), failed
    assert unreadable in lines[0]
    assert published.server.url in lines[0]
    assert_nothing_pulled(bob, published)
    assert_resumes(bob, published, tmp_path)
