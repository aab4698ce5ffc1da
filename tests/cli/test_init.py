"""`dstack init` through the real CLI, against the local server and a git server over HTTP
that wants a token."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.runner.git_http import GitHttp, bare_repo_from, serving

TOKEN = "tok-cli-4e8b1f0d2c"


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Env]:
    env = make_env(tmp_path, "process")
    try:
        yield env
    finally:
        _stop_server(env.home)


@pytest.fixture
def git_server(tmp_path: Path, user: Env) -> Iterator[GitHttp]:
    root = tmp_path / "git-server"
    root.mkdir()
    bare_repo_from(user.repo, root / "models.git")
    with serving(GitHttp(root, TOKEN)) as server:
        user.git("remote", "add", "origin", server.url("models.git"))
        yield server


def test_no_remote_is_one_clear_line(user: Env) -> None:
    result = user.dstack("init", "--token", TOKEN)
    assert result.code == 1
    assert result.err.splitlines() == [
        "Error: this repository has no remote: runners clone from one",
        "Hint: add one with `git remote add origin URL`, or keep using uploads",
    ]


def test_a_folder_remote_cannot_be_cloned_by_runners(user: Env, tmp_path: Path) -> None:
    user.git("remote", "add", "origin", str(tmp_path / "elsewhere.git"))
    result = user.dstack("init", "--no-credentials")
    assert result.code == 1
    assert "is a folder on this machine" in result.err


def test_two_kinds_of_credentials_are_refused(user: Env, tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    result = user.dstack("init", "--token", TOKEN, "--ssh-key", str(key))
    assert result.code == 1
    assert "at most one of --token, --ssh-key" in result.err


def test_token_from_a_prompt_stored_shown_and_removed(user: Env, git_server: GitHttp) -> None:
    url = git_server.url("models.git")
    assert "Nothing stored for" in user.dstack("init", "--show").out

    prompted = subprocess.run(
        [sys.executable, "-m", "dstack", "init", "--token"],
        cwd=user.repo,
        env=user.environ(),
        input=TOKEN + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert prompted.returncode == 0, prompted.stderr
    assert TOKEN not in prompted.stdout + prompted.stderr  # not echoed
    assert f"Stored. Runners clone {url} with a token (hidden)" in prompted.stdout
    shown = user.dstack("init", "--show")
    assert f"Runners clone {url} with a token (hidden)" in shown.out
    assert TOKEN not in shown.out
    removed = user.dstack("init", "--remove")
    assert removed.code == 0, removed
    assert "Nothing stored for" in user.dstack("init", "--show").out


def test_credentials_the_remote_refuses_are_not_stored(user: Env, git_server: GitHttp) -> None:
    wrong = user.dstack("init", "--token", "not-the-token")
    assert wrong.code == 1
    assert f"cannot read {git_server.url('models.git')} with these credentials" in wrong.err
    assert "not-the-token" not in wrong.err
    public = user.dstack("init", "--no-credentials")
    assert public.code == 1
    assert "without credentials" in public.err
    assert "Nothing stored for" in user.dstack("init", "--show").out


def test_a_token_for_a_git_protocol_remote_is_refused(user: Env) -> None:
    user.git("remote", "add", "origin", "git://git.example.com/team/models.git")

    result = user.dstack("init", "--remote", "--token", TOKEN)

    assert result.code == 1
    assert result.err.splitlines() == [
        "Error: git remote 'origin' is git://git.example.com/team/models.git: a token only "
        "applies to an HTTPS remote",
        "Hint: `git remote set-url origin https://...` first, or use --ssh-key PATH, or "
        "--no-credentials for a public repository",
    ]
    assert not (user.home / "server" / "server.json").exists()
