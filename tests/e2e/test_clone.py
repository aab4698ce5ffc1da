"""Remote runs whose code the runner clones: a `dstack server`, a `dstack-runner` and a git
server over HTTP that wants a token, all real processes or threads on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)
from tests.e2e.test_remote import run_name_in
from tests.runner.git_http import GitHttp, bare_repo_from, push_to, serving

TOKEN = "glpat-7d1c9e0b4a2f6358"
WORKFLOWS = """
workflows:
  - name: show
    provider: bash
    commands:
      - cat README.md
      - cat local.txt
"""


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[TeamServer, RunnerProcess]]:
    server = TeamServer(home=tmp_path / "server-home")
    runner = RunnerProcess("r1", tmp_path / "runners" / "r1", server)
    try:
        server.start()
        runner.start()
        wait_until(lambda: online_runners(server) >= {"r1"}, 30, "the runner")
        yield server, runner
    finally:
        runner.stop()
        server.stop()


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHttp]:
    root = tmp_path / "git-server"
    root.mkdir()
    with serving(GitHttp(root, TOKEN)) as server:
        yield server


@pytest.fixture
def user(
    tmp_path: Path, team: tuple[TeamServer, RunnerProcess], git_server: GitHttp
) -> Iterator[Env]:
    """A user whose repository has an `origin` on the git server, pushed and fetched."""
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    server, _ = team
    assert env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
    env.write(".dstack/workflows.yaml", WORKFLOWS)
    env.commit("workflows")
    bare = bare_repo_from(env.repo, git_server.root / "models.git")
    env.git("remote", "add", "origin", git_server.url("models.git"))
    _push_and_fetch(env, bare)
    try:
        yield env
    finally:
        _stop_server(env.home)


def _push_and_fetch(env: Env, bare: Path) -> None:
    push_to(env.repo, bare)
    env.git("-c", f"http.extraHeader=Authorization: Bearer {TOKEN}", "fetch", "-q", "origin")


def _run(env: Env, timeout: float = 60) -> tuple[str, dict[str, Any]]:
    result = env.dstack("run", "--remote", "-d", "show")
    assert result.code == 0, result
    name = run_name_in(result.out + result.err)
    deadline = time.monotonic() + timeout
    while True:
        shown = env.dstack("ps", name, "--json", "--remote")
        assert shown.code == 0, shown
        run: dict[str, Any] = json.loads(shown.out)
        if run["status"] in {"done", "failed"}:
            return name, run
        assert time.monotonic() < deadline, f"{name} stayed {run['status']}"
        time.sleep(0.3)


def _files_under(folder: Path) -> Iterator[bytes]:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path.read_bytes()


def _bundles_in(folder: Path) -> int:
    return sum(data.startswith(b"# v2 git bundle") for data in _files_under(folder))


def test_a_pushed_commit_is_cloned_an_unpushed_one_uploaded(
    user: Env, team: tuple[TeamServer, RunnerProcess], git_server: GitHttp, tmp_path: Path
) -> None:
    server, runner = team
    init = user.dstack("init", "--token", TOKEN, "--remote")
    assert init.code == 0, init
    assert TOKEN not in init.out + init.err
    assert f"Runners clone {git_server.url('models.git')} with a token (hidden)" in init.out
    again = user.dstack("init", "--remote")
    assert again.code == 0, again
    assert again.out.startswith("Nothing to change."), again
    user.write("local.txt", "only in my working copy\n")

    name, run = _run(user)

    assert run["status"] == "done", run
    logs = user.dstack("logs", name, "--remote")
    assert "# test" in logs.out
    assert "only in my working copy" in logs.out
    assert run["repo"]["clone_url"] == git_server.url("models.git")
    assert run["repo"]["bundle_digest"] is None
    assert _bundles_in(server.home) == 0  # the server's blob store holds no bundle
    assert any(path == "/models.git/git-upload-pack" for _, path, _ in git_server.seen)

    # A commit not pushed: uploaded as a bundle, as without `dstack init`.
    user.write("README.md", "# changed, not pushed\n")
    user.commit("not pushed")
    name, run = _run(user)
    assert run["status"] == "done", run
    assert "# changed, not pushed" in user.dstack("logs", name, "--remote").out
    assert run["repo"]["clone_url"] is None
    assert run["repo"]["bundle_digest"] is not None
    assert _bundles_in(server.home) == 1

    # The token is nowhere but in the server's encrypted table.
    shown = user.dstack("init", "--show", "--remote")
    assert TOKEN not in shown.out + user.dstack("ps", "-a", "--json", "--remote").out
    for place in (server.home / "server.log", runner.work_dir, tmp_path / "runners" / "r1.log"):
        files = [place.read_bytes()] if place.is_file() else list(_files_under(place))
        assert not any(TOKEN.encode() in data for data in files), place


def test_a_token_the_remote_refuses_fails_the_job_with_one_clear_line(
    user: Env, git_server: GitHttp
) -> None:
    init = user.dstack("init", "--token", TOKEN, "--remote")
    assert init.code == 0, init
    git_server.token = "rotated-token-0000"  # the stored token no longer works
    user.write("local.txt", "x\n")

    name, run = _run(user)

    assert run["status"] == "failed", run
    job = run["jobs"][0]
    url = git_server.url("models.git")
    assert f"cannot clone {url} at commit" in job["message"], job
    assert "refused access" in job["message"]
    assert "dstack init" in job["message"]
    assert TOKEN not in json.dumps(run)
    logs = user.dstack("logs", name, "--remote")
    assert f"cannot clone {url}" in logs.out + logs.err
