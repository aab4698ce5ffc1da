"""Runners cloning a run's commit from a git server that wants a token (real git over HTTP)."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstack.errors import RepoError
from dstack.models.repo import CloneCredentials, CredentialKind, RepoRef
from dstack.repo.credentials import git_auth, mask, url_for_kind
from dstack.repo.state import read_repo_state
from dstack.runner.code import fetch_code

from .conftest import FakeRunnerApi, git
from .git_http import GitHttp, bare_repo_from, serving

TOKEN = "tok-3f9a7c21e5d84b60"


def clone_api(credentials: CloneCredentials) -> FakeRunnerApi:
    """The in-memory server twin, registered, holding jobs `job-1` and `job-2` and answering
    the clone credentials of its jobs."""
    api = FakeRunnerApi().registered()
    api.hold("job-1", "job-2")
    api.clone_credentials = credentials
    return api


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A user's working copy with one commit, plus a file only in the working copy."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "train.sh").write_text("echo train\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "first")
    return work


@pytest.fixture(params=[True, False], ids=["smart-http", "dumb-http"])
def server(request: pytest.FixtureRequest, tmp_path: Path, upstream: Path) -> Iterator[GitHttp]:
    root = tmp_path / "served"
    root.mkdir()
    bare_repo_from(upstream, root / "models.git")
    with serving(GitHttp(root, TOKEN, smart=request.param)) as git_server:
        yield git_server


def recorded(upstream: Path, api: FakeRunnerApi, url: str) -> RepoRef:
    (upstream / "local.txt").write_text("only in the working copy\n")
    state = read_repo_state(upstream)
    return RepoRef(
        repo_id="127.0.0.1/models",
        remote_url=url,
        branch=state.branch,
        commit=state.commit,
        tree=state.tree,
        diff_digest=api.add_blob(state.diff),
        clone_url=url,
    )


def every_file_under(folder: Path) -> Iterator[bytes]:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path.read_bytes()


def test_clones_the_commit_and_applies_the_diff(
    tmp_path: Path, upstream: Path, server: GitHttp
) -> None:
    url = server.url("models.git")
    api = clone_api(CloneCredentials(url=url, kind=CredentialKind.TOKEN, secret=TOKEN))
    repo = recorded(upstream, api, url)
    work_dir = tmp_path / "runner"

    code = fetch_code(api, repo, work_dir / "jobs" / "job-1")

    assert (code / "train.sh").read_text() == "echo train\n"
    assert (code / "local.txt").read_text() == "only in the working copy\n"
    assert git(code, "rev-parse", "HEAD") == repo.commit
    assert api.clone_requests == ["job-1"]
    assert all(ok for _, _, ok in server.seen)
    assert (work_dir / "mirrors").is_dir()
    # The token is in no file the runner keeps: mirror, checkout, configs.
    assert not any(TOKEN.encode() in data for data in every_file_under(work_dir))


def test_a_second_job_of_the_commit_uses_the_mirror(
    tmp_path: Path, upstream: Path, server: GitHttp
) -> None:
    url = server.url("models.git")
    api = clone_api(CloneCredentials(url=url, kind=CredentialKind.TOKEN, secret=TOKEN))
    repo = recorded(upstream, api, url)
    fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")
    requests = len(server.seen)

    code = fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-2")

    assert len(server.seen) == requests  # nothing asked of the remote again
    assert (code / "local.txt").exists()


def test_a_wrong_token_fails_with_one_line_naming_the_url(
    tmp_path: Path, upstream: Path, server: GitHttp
) -> None:
    url = server.url("models.git")
    wrong = "wrong-token-0123456789"
    api = clone_api(CloneCredentials(url=url, kind=CredentialKind.TOKEN, secret=wrong))
    repo = recorded(upstream, api, url)

    with pytest.raises(RepoError) as caught:
        fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")

    text = str(caught.value)
    assert "\n" not in text
    assert f"cannot clone {url} at commit {repo.commit[:12]}" in text  # type: ignore[index]
    assert "refused access" in text
    assert "dstack init" in text
    assert wrong not in text


def test_a_commit_the_remote_lacks_says_to_push_it(
    tmp_path: Path, upstream: Path, server: GitHttp
) -> None:
    url = server.url("models.git")
    api = clone_api(CloneCredentials(url=url, kind=CredentialKind.TOKEN, secret=TOKEN))
    (upstream / "later.txt").write_text("not pushed\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "later")
    repo = recorded(upstream, api, url)

    with pytest.raises(RepoError) as caught:
        fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")

    assert repo.commit is not None
    assert repo.commit[:12] in str(caught.value)


def test_an_ssh_key_lives_in_a_private_file_only_while_git_runs(tmp_path: Path) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    with git_auth(CredentialKind.SSH_KEY, key, known_hosts=tmp_path / "kh") as env:
        command = env["GIT_SSH_COMMAND"].split()
        key_file = Path(command[command.index("-i") + 1])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.read_text() == key + "\n"
        assert command[0] == "ssh"
        for option in ("IdentitiesOnly=yes", "StrictHostKeyChecking=accept-new", "BatchMode=yes"):
            assert option in command
        assert f"UserKnownHostsFile={tmp_path / 'kh'}" in command
        assert key not in " ".join(env.values())
    assert not key_file.exists()
    assert not key_file.parent.exists()


def test_git_uses_the_ssh_command_with_the_key(tmp_path: Path) -> None:
    """git runs exactly that command for an ssh:// URL (a stand-in `ssh` records it)."""
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    log = tmp_path / "ssh.log"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\nexit 1\n')
    fake.chmod(0o755)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    with git_auth(CredentialKind.SSH_KEY, key) as env:
        env["GIT_SSH_COMMAND"] = env["GIT_SSH_COMMAND"].replace("ssh", str(fake), 1)
        done = subprocess.run(
            ["git", "ls-remote", "git@example.org:acme/models.git"],
            env={"PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", **env},
            capture_output=True,
            check=False,
        )
    assert done.returncode != 0
    argv = log.read_text().split()
    assert "-i" in argv
    assert "IdentitiesOnly=yes" in argv
    assert "git@example.org" in argv


def test_the_token_is_sent_as_a_header_not_in_the_url() -> None:
    with git_auth(CredentialKind.TOKEN, TOKEN) as env:
        values = {
            env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
            for i in range(int(env["GIT_CONFIG_COUNT"]))
        }
    assert values["credential.helper"] == ""
    assert values["http.extraHeader"].startswith("Authorization: Basic ")


@pytest.mark.parametrize(
    ("url", "kind", "expected"),
    [
        (
            "git@github.com:acme/models.git",
            CredentialKind.TOKEN,
            "https://github.com/acme/models.git",
        ),
        (
            "ssh://git@github.com/acme/models",
            CredentialKind.TOKEN,
            "https://github.com/acme/models",
        ),
        (
            "https://github.com/acme/models.git",
            CredentialKind.SSH_KEY,
            "git@github.com:acme/models.git",
        ),
        (
            "https://tok@github.com/acme/models.git",
            CredentialKind.NONE,
            "https://github.com/acme/models.git",
        ),
        (
            "https://github.com/acme/models.git",
            CredentialKind.TOKEN,
            "https://github.com/acme/models.git",
        ),
    ],
)
def test_the_url_fits_the_credentials(url: str, kind: CredentialKind, expected: str) -> None:
    assert url_for_kind(url, kind) == expected


def test_mask_hides_the_secret_and_each_line_of_a_key() -> None:
    assert mask(f"failed for {TOKEN}", TOKEN) == "failed for ***"
    assert "abcdef" not in mask("x abcdefgh y", "-----BEGIN-----\nabcdefgh\n-----END-----")
