"""Getting a run's commit by cloning its remote: one bare mirror per URL on the runner.

Each mirror (``<work_dir>/mirrors/<hash of the URL>.git``) fetches only what it lacks: first
the commit alone (``git fetch --depth 1 URL COMMIT``), and when the remote refuses to serve
a commit by its hash (dumb HTTP, older servers), every branch. The commit is then kept under
a ref of its own, and the job's checkout is fetched from the mirror on this disk. Mirrors
never store the URL with a secret, nor the secret itself: credentials live in the
environment of the git processes (see :mod:`dstack.repo.credentials`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from filelock import FileLock

from dstack.errors import RepoError
from dstack.models.repo import CloneCredentials, RepoRef
from dstack.repo.command import GitCommandError, rev_parse, run_git
from dstack.repo.credentials import explain, git_auth, mask
from dstack.repo.materialize import materialize, mirror_ref

FETCH_TIMEOUT = 30 * 60.0
"""A fetch that hangs (a remote that stopped answering) must not hold the job forever."""
LOCK_TIMEOUT = 60 * 60.0


class GitTimeouts(NamedTuple):
    """Seconds a `git fetch` may take, and a job may wait for the mirror another job of this
    runner is updating (`dstack-runner start --git-fetch-timeout/--git-lock-timeout`)."""

    fetch: float = FETCH_TIMEOUT
    lock: float = LOCK_TIMEOUT


def clone_code(
    credentials: CloneCredentials,
    repo: RepoRef,
    code_dir: Path,
    *,
    diff: Path | None,
    mirrors_dir: Path,
    timeouts: GitTimeouts = GitTimeouts(),
) -> None:
    """Make ``code_dir`` hold the recorded tree of ``repo``: its commit from a clone of
    ``credentials.url``, then the diff. Raises `RepoError` with one line that names the URL
    (never the secret) and what to do."""
    if repo.commit is None:
        raise RepoError("the run records no commit to clone")
    mirror = update_mirror(credentials, repo.commit, mirrors_dir, timeouts)
    materialize(
        code_dir,
        commit=repo.commit,
        bundle=None,
        mirror=mirror,
        diff=diff,
        remote_url=repo.remote_url or credentials.url,
        branch=repo.branch,
        expected_tree=repo.tree,
    )


def mirror_path(mirrors_dir: Path, url: str) -> Path:
    return mirrors_dir / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".git")


def update_mirror(
    credentials: CloneCredentials,
    commit: str,
    mirrors_dir: Path,
    timeouts: GitTimeouts = GitTimeouts(),
) -> Path:
    """The mirror of ``credentials.url``, holding ``commit`` under `mirror_ref`. Jobs of one
    runner that need the same mirror take turns (a file lock), and a commit already there
    costs no network round trip."""
    mirror = mirror_path(mirrors_dir, credentials.url)
    mirrors_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(mirror) + ".lock", timeout=timeouts.lock):
        if not (mirror / "HEAD").exists():
            run_git(["init", "-q", "--bare", mirror], cwd=mirrors_dir)
        if rev_parse(mirror, f"{commit}^{{commit}}") is None:
            _fetch(credentials, commit, mirror, mirrors_dir / "known_hosts", timeouts.fetch)
        run_git(["update-ref", mirror_ref(commit), commit], cwd=mirror)
    return mirror


def _fetch(
    credentials: CloneCredentials, commit: str, mirror: Path, known_hosts: Path, timeout: float
) -> None:
    url, secret = credentials.url, credentials.secret
    attempts = [
        ["fetch", "-q", "--no-tags", "--depth", "1", url, commit],
        ["fetch", "-q", "--no-tags", url, "+refs/heads/*:refs/heads/*"],
    ]
    with git_auth(credentials.kind, secret, known_hosts=known_hosts) as env:
        for index, args in enumerate(attempts):
            try:
                run_git(args, cwd=mirror, env=env, timeout=timeout, what="git fetch")
                if rev_parse(mirror, f"{commit}^{{commit}}") is not None:
                    return
            except GitCommandError as exc:
                if index == len(attempts) - 1:
                    summary = explain(mask(exc.summary, secret))
                    if "host key verification failed" in summary.lower():
                        raise host_key_refused(url, commit, summary, known_hosts) from None
                    raise clone_failed(url, commit, summary) from None
    raise RepoError(
        f"{url} has no commit {commit[:12]} on any branch",
        "push the commit (`git push`), then submit the run again",
    )


def clone_failed(url: str, commit: str, summary: str) -> RepoError:
    return RepoError(
        f"cannot clone {url} at commit {commit[:12]}: {summary}",
        "check the credentials `dstack init` stored (`dstack init --show`), or remove them "
        "(`dstack init --remove`) so that runs upload their code",
    )


def host_key_refused(url: str, commit: str, summary: str, known_hosts: Path) -> RepoError:
    """The SSH host answered with a key other than the one this runner trusted before: not
    the credentials' fault, and nothing was sent to it."""
    host = _known_hosts_name(url)
    return RepoError(
        f"cannot clone {url} at commit {commit[:12]}: {summary}",
        f"the SSH host key of {host} is not the one this runner saw before; if the host was "
        f"re-keyed, forget the old key: ssh-keygen -R '{host}' -f {known_hosts}",
    )


def _known_hosts_name(url: str) -> str:
    """How known_hosts names the host of an SSH URL: ``host``, or ``[host]:port`` off 22."""
    if "://" not in url:  # scp-like: [user@]host:path
        return url.split(":", 1)[0].rsplit("@", 1)[-1]
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"[{host}]:{parts.port}" if parts.port not in (None, 22) else host
