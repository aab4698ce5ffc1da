"""Runners cloning a run's commit over SSH with the key `dstack init --ssh-key` stored, from a
real `sshd` on loopback serving a bare repository the way git hosts do."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.infra.fixtures import unavailable
from tests.infra.sshd import Sshd, SshdUnavailable, make_key, running_sshd

from dstack.errors import RepoError
from dstack.models.repo import CloneCredentials, CredentialKind
from dstack.runner.code import fetch_code

from .conftest import FakeRunnerApi, git
from .test_clone import clone_api, every_file_under, recorded


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    try:
        with running_sshd() as server:
            yield server
    except SshdUnavailable as exc:
        unavailable("sshd (openssh-server)", exc)


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A user's working copy with one commit."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "train.sh").write_text("echo train\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "first")
    return work


@pytest.fixture
def served(tmp_path: Path, upstream: Path) -> Path:
    """A plain bare clone of `upstream`, as a git host keeps it."""
    bare = tmp_path / "served" / "models.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream), str(bare)], check=True)
    return bare


@pytest.fixture
def key(tmp_path: Path, sshd: Sshd) -> str:
    """The private key the user gave `dstack init --ssh-key`; its public half is authorized."""
    private, public = make_key(tmp_path / "id_deploy", "deploy key")
    sshd.authorize(public)
    return private


def ssh_api(url: str, key: str) -> FakeRunnerApi:
    return clone_api(CloneCredentials(url=url, kind=CredentialKind.SSH_KEY, secret=key))


def known_host_keys(known_hosts: Path, host: str) -> list[str]:
    """`TYPE BASE64` of each key `known_hosts` holds for `host` (its names may be hashed)."""
    found = subprocess.run(
        ["ssh-keygen", "-F", host, "-f", str(known_hosts)], capture_output=True, text=True
    )
    lines = [ln for ln in found.stdout.splitlines() if ln and not ln.startswith("#")]
    return [" ".join(line.split()[1:3]) for line in lines]


def key_lines(key: str) -> list[str]:
    """The base64 body of a private key: what must never be printed."""
    return [line for line in key.splitlines() if line and not line.startswith("-----")]


def test_clones_the_commit_with_the_key(
    tmp_path: Path, upstream: Path, served: Path, sshd: Sshd, key: str
) -> None:
    url = sshd.url(served)
    api = ssh_api(url, key)
    repo = recorded(upstream, api, url)
    work_dir = tmp_path / "runner"

    code = fetch_code(api, repo, work_dir / "jobs" / "job-1")

    assert git(code, "rev-parse", "HEAD") == repo.commit
    assert (code / "train.sh").read_text() == "echo train\n"
    assert (code / "local.txt").read_text() == "only in the working copy\n"
    assert sshd.accepted() >= 1
    # First contact: the host key was trusted and is remembered in the runner's own file.
    known = known_host_keys(work_dir / "mirrors" / "known_hosts", f"[127.0.0.1]:{sshd.port}")
    assert known == [sshd.host_public_key()]
    # The key is in no file the runner keeps (mirror, checkout, known_hosts).
    body = key_lines(key)
    assert not any(
        any(line.encode() in data for line in body) for data in every_file_under(work_dir)
    )


def test_a_second_job_of_the_commit_does_not_connect(
    tmp_path: Path, upstream: Path, served: Path, sshd: Sshd, key: str
) -> None:
    url = sshd.url(served)
    api = ssh_api(url, key)
    repo = recorded(upstream, api, url)
    fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")
    logins = sshd.accepted()

    code = fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-2")

    assert sshd.accepted() == logins
    assert git(code, "rev-parse", "HEAD") == repo.commit


def test_a_wrong_key_fails_with_one_line_naming_the_url(
    tmp_path: Path, upstream: Path, served: Path, sshd: Sshd, key: str
) -> None:
    url = sshd.url(served)
    wrong, _ = make_key(tmp_path / "id_other", "not authorized")
    api = ssh_api(url, wrong)
    repo = recorded(upstream, api, url)

    with pytest.raises(RepoError) as caught:
        fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")

    text = str(caught.value)
    assert "\n" not in text
    assert repo.commit is not None
    assert f"cannot clone {url} at commit {repo.commit[:12]}: " in text
    assert "Permission denied (publickey)" in text  # ssh's reason, not only git's
    assert "dstack init --show" in text
    assert not any(line in text for line in key_lines(wrong))
    assert sshd.accepted() == 0


def test_a_changed_host_key_is_refused_before_the_key_is_offered(
    tmp_path: Path, upstream: Path, served: Path, sshd: Sshd, key: str
) -> None:
    """The runner trusted another host key at this address before (a re-keyed server, or
    someone in the middle): the clone stops, and the hint's command lets the next one in."""
    url = sshd.url(served)
    api = ssh_api(url, key)
    repo = recorded(upstream, api, url)
    known_hosts = tmp_path / "runner" / "mirrors" / "known_hosts"
    known_hosts.parent.mkdir(parents=True)
    _, other = make_key(tmp_path / "old_host_key", "old host key")
    host = f"[127.0.0.1]:{sshd.port}"
    known_hosts.write_text(f"{host} {' '.join(other.split()[:2])}\n")

    with pytest.raises(RepoError) as caught:
        fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-1")

    text = str(caught.value)
    assert "\n" not in text
    assert f"cannot clone {url}" in text
    assert "Host key verification failed" in text
    assert "dstack init" not in text  # the credentials are not at fault
    assert sshd.offered() == 0  # ssh gave up before authenticating
    command = f"ssh-keygen -R '{host}' -f {known_hosts}"
    assert caught.value.hint is not None
    assert caught.value.hint.endswith(command)

    subprocess.run(shlex.split(command), check=True, capture_output=True)
    code = fetch_code(api, repo, tmp_path / "runner" / "jobs" / "job-2")
    assert git(code, "rev-parse", "HEAD") == repo.commit
    assert known_host_keys(known_hosts, host) == [sshd.host_public_key()]
