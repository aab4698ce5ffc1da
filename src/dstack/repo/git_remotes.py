"""The git remotes configured in a working copy: which one runners clone, whether it has a commit.

URL forms (credential-free, normalized) and repository ids are in `repo/remote_urls.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dstack.errors import RepoError
from dstack.repo.command import GitCommandError, run_git
from dstack.repo.remote_urls import normalize_remote_url, sanitize_remote_url


@dataclass(frozen=True)
class GitRemote:
    name: str
    url: str
    """As configured, which may carry a token: show `sanitize_remote_url(url)` to people."""


def list_remotes(root: Path) -> list[GitRemote]:
    """The remotes of the repository at ``root`` with their fetch URLs, sorted by name."""
    try:
        out = run_git(["config", "--get-regexp", r"^remote\..*\.url$"], cwd=root)
    except GitCommandError:  # exit code 1: no remote at all
        return []
    remotes = []
    for line in out.decode().splitlines():
        key, _, url = line.partition(" ")
        name = key.removeprefix("remote.").removesuffix(".url")
        remotes.append(GitRemote(name, url.strip()))
    return sorted(remotes, key=lambda r: r.name)


def choose_remote(root: Path, name: str | None = None) -> GitRemote:
    """``name``, else ``origin``, else the only remote. `RepoError` saying what to do when
    there is none, or several and none is ``origin``."""
    remotes = list_remotes(root)
    if name is not None:
        found = next((r for r in remotes if r.name == name), None)
        if found is None:
            known = ", ".join(r.name for r in remotes) or "none"
            raise RepoError(f"this repository has no remote '{name}' (remotes: {known})")
        return found
    if not remotes:
        raise RepoError(
            "this repository has no remote: runners clone from one",
            "add one with `git remote add origin URL`, or keep using uploads",
        )
    origin = next((r for r in remotes if r.name == "origin"), None)
    if origin is not None:
        return origin
    if len(remotes) == 1:
        return remotes[0]
    names = ", ".join(r.name for r in remotes)
    raise RepoError(
        f"this repository has several remotes ({names}) and none is 'origin'",
        "pick one with `dstack init --git-remote NAME`",
    )


def same_repository(a: str, b: str) -> bool:
    """Whether two remote URLs name one repository (scheme, user and `.git` aside)."""
    na, nb = normalize_remote_url(a), normalize_remote_url(b)
    if na is not None and nb is not None:
        return na == nb
    return sanitize_remote_url(a).rstrip("/") == sanitize_remote_url(b).rstrip("/")


def is_pushed(root: Path, commit: str, url: str) -> bool:
    """Whether a remote-tracking branch of a remote pointing at ``url`` contains ``commit``:
    then a clone of ``url`` has it (as of the last fetch). Reads local refs only."""
    names = [r.name for r in list_remotes(root) if same_repository(r.url, url)]
    if not names:
        return False
    patterns = [f"refs/remotes/{name}/" for name in names]
    try:
        out = run_git(
            ["for-each-ref", "--count=1", "--format=%(refname)", "--contains", commit, *patterns],
            cwd=root,
        )
    except GitCommandError as exc:
        summary = exc.summary
        raise RepoError(f"cannot tell whether commit {commit[:12]} was pushed: {summary}") from exc
    return bool(out.strip())
