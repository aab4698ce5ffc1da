"""Which repository a command works in: the current one (the working copy's, as `dstack run`
records it), or with `--all-repos` every one (the server allows that to admins only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dstack.errors import RepoError

F = TypeVar("F", bound=Callable[..., Any])


def current_repo_id(cwd: Path | None = None) -> str:
    """The id of the repository holding `cwd` (default: the current folder). Reads only
    the remote, not the working tree. `RepoError` outside a git repository."""
    # Imported here: git's modules (about 20 ms) only for a command that asks for its repo.
    from dstack.repo.command import GitCommandError, run_git
    from dstack.repo.remote_urls import repo_id_for
    from dstack.repo.state import find_repo_root

    root = find_repo_root(cwd or Path.cwd())
    try:
        origin = run_git(["config", "--get", "remote.origin.url"], cwd=root).decode().strip()
    except GitCommandError:  # exit code 1: no such key
        origin = ""
    return repo_id_for(root, origin or None)


UPLOADS_REPO = "local:uploads"
"""Where `dstack tags add TAG -a PATH` run outside any git repository keeps its uploads."""


def tags_repo_id() -> str:
    """The repository whose tags `:TAG`, `dstack tags` and `dstack ls :TAG` mean: the current
    one; outside a git repository, the one uploads made there go to."""
    try:
        return current_repo_id()
    except RepoError:
        return UPLOADS_REPO


def repo_for(
    command: str, *, all_repos: bool = False, instead: str = "--all-repos (admins)"
) -> str | None:
    """The repository `dstack COMMAND` works in; None with `all_repos`. Outside a git
    repository, a `RepoError` that says what to do (run it in one, or pass `instead`)."""
    if all_repos:
        return None

    try:
        return current_repo_id()
    except RepoError as exc:
        raise RepoError(
            f"{exc.message}: `dstack {command}` works in the current repository",
            hint=f"run it inside the repository, or pass {instead}",
        ) from exc


def all_repos_option(func: F) -> F:
    """`--all-repos`: the keyword `all_repos`."""
    return click.option(
        "--all-repos",
        "all_repos",
        is_flag=True,
        help="Every repository's, not only the current one's (admins).",
    )(func)
