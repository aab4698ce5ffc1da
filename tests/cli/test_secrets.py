"""`dstack secrets` against the local server, and a secret reaching a real job end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dstack.cli.main import cli
from dstack.errors import NotFoundError, RepoError
from dstack.server.local import stop_local_server

VALUE = "hf_Zq8vX3-very-secret"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The local server's home; the commands run in a fresh git repository (whose secrets
    `dstack secrets` manages)."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    monkeypatch.chdir(work)
    try:
        yield home
    finally:
        stop_local_server(home)


def invoke(home: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    env = {"DSTACK_HOME": str(home), "DSTACK_EXECUTOR": "process"}
    result = CliRunner().invoke(cli, list(args), input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_a_prompted_value_is_never_echoed(home: Path) -> None:
    code, output = invoke(home, "secrets", "add", "HF_TOKEN", input=f"{VALUE}\n{VALUE}\n")

    assert code == 0, output
    assert VALUE not in output
    assert "Value of HF_TOKEN" in output
    assert "Secret 'HF_TOKEN' added." in output
    code, output = invoke(home, "secrets", "list")
    assert (code, "HF_TOKEN" in output, VALUE in output) == (0, True, False)


def test_adding_an_existing_name_asks_before_overwriting(home: Path) -> None:
    assert invoke(home, "secrets", "add", "KEY", "one")[0] == 0

    declined = invoke(home, "secrets", "add", "KEY", "two", input="n\n")
    accepted = invoke(home, "secrets", "add", "KEY", input="y\nthree\nthree\n")
    forced = invoke(home, "secrets", "add", "-y", "KEY", "four")

    assert declined[0] == 1
    assert "Secret 'KEY' exists. Overwrite it?" in declined[1]
    assert (accepted[0], "Secret 'KEY' updated." in accepted[1]) == (0, True)
    assert (forced[0], "Overwrite" in forced[1]) == (0, False)


def test_update_and_delete(home: Path) -> None:
    assert invoke(home, "secrets", "add", "KEY", "one")[0] == 0

    assert invoke(home, "secrets", "update", "KEY", "two") == (0, "Secret 'KEY' updated.\n")
    declined = invoke(home, "secrets", "delete", "KEY", input="n\n")
    assert declined[0] == 1, declined
    assert "Nothing changed." in declined[1]
    assert "KEY" in invoke(home, "secrets", "list")[1]
    assert invoke(home, "secrets", "delete", "-y", "KEY") == (0, "Secret 'KEY' deleted.\n")
    assert "No secrets yet" in invoke(home, "secrets", "list")[1]


def test_secrets_belong_to_the_current_repository_or_are_global(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke(home, "secrets", "add", "KEY", "here")[0] == 0
    assert invoke(home, "secrets", "add", "--global", "SHARED", "everywhere")[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.chdir(other)

    listed = invoke(home, "secrets", "list")
    with pytest.raises(NotFoundError, match="secret 'KEY' not found"):
        invoke(home, "secrets", "update", "KEY", "v")
    added = invoke(home, "secrets", "add", "KEY", "there")  # no question: none here
    monkeypatch.chdir(tmp_path)  # no repository: only --global works
    with pytest.raises(RepoError) as outside:
        invoke(home, "secrets", "list")
    global_only = invoke(home, "secrets", "list", "--global")

    assert "SHARED" in listed[1]
    assert "global" in listed[1]
    assert "KEY" not in listed[1]
    assert added == (0, "Secret 'KEY' added.\n")
    assert "`dstack secrets` works in the current repository" in outside.value.message
    assert outside.value.hint == "run it inside the repository, or pass --global (admins)"
    assert ("SHARED" in global_only[1], "KEY" in global_only[1]) == (True, False)


def test_the_local_admin_manages_users_and_runner_tokens(home: Path) -> None:
    code, output = invoke(home, "users", "add", "bob", "--repo", "github.com/acme/models")
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    assert len(token) > 30

    listed = invoke(home, "users", "list")[1]
    runner_token = invoke(home, "runners", "token")[1].strip()

    assert "bob" in listed
    assert "github.com/acme/models" in listed
    assert len(runner_token) > 30
    assert runner_token != token
    assert invoke(home, "users", "delete", "-y", "bob") == (0, "User 'bob' deleted.\n")
    listing = invoke(home, "runners")  # plain `runners` still lists
    assert listing[0] == 0
    assert "HEARTBEAT" in listing[1] or listing[1] == "No runners yet.\n"


# --- end to end through the real CLI -------------------------------------------------------
def dstack(home: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSTACK_HOME": str(home), "DSTACK_EXECUTOR": "process"}
    return subprocess.run(
        [sys.executable, "-m", "dstack", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def git_repo(path: Path, workflows: str) -> Path:
    path.mkdir()
    (path / ".dstack").mkdir()
    (path / ".dstack" / "workflows.yaml").write_text(textwrap.dedent(workflows).lstrip())
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


def test_a_secret_reaches_a_job_and_is_masked_in_its_logs(home: Path, tmp_path: Path) -> None:
    repo = git_repo(
        tmp_path / "repo",
        """
        workflows:
          - name: login
            provider: bash
            env:
              - AUTH=Bearer ${{ secrets.HF_TOKEN }}
            commands:
              - echo "command sees ${{ secrets.HF_TOKEN }}"
              - echo "env sees $HF_TOKEN"
              - echo "header $AUTH"
              - case "$HF_TOKEN" in hf_Zq8v*-secret) echo "value arrived intact";; esac
        """,
    )
    added = dstack(home, repo, "secrets", "add", "HF_TOKEN", VALUE)
    assert added.returncode == 0, added.stderr

    run = dstack(home, repo, "run", "login")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "command sees ***" in run.stdout
    assert "env sees ***" in run.stdout
    assert "header Bearer ***" in run.stdout
    assert "value arrived intact" in run.stdout
    assert VALUE not in run.stdout + run.stderr
    ps = dstack(home, repo, "ps", "-a", "--json")
    assert ps.returncode == 0
    assert VALUE not in ps.stdout
    assert "${{ secrets.HF_TOKEN }}" in ps.stdout  # the spec keeps the reference


def test_a_run_referring_to_a_missing_secret_fails_before_anything_starts(
    home: Path, tmp_path: Path
) -> None:
    repo = git_repo(
        tmp_path / "repo",
        """
        workflows:
          - name: login
            provider: bash
            commands:
              - echo ${{ secrets.WANDB_KEY }}
        """,
    )

    run = dstack(home, repo, "run", "login")

    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert lines[0].startswith("Uploading commit ")  # the code goes first: no job started
    assert lines[1:] == [
        "Error: the workflow refers to secret 'WANDB_KEY', which does not exist",
        "Hint: add it: dstack secrets add WANDB_KEY",
    ]
