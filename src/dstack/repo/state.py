"""What a run records about the code: where it comes from and exactly which tree it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dstack.background import Background
from dstack.errors import RepoError
from dstack.repo.command import GitCommandError, run_git
from dstack.repo.remote_urls import repo_id_for, sanitize_remote_url
from dstack.repo.worktree import diff_to_tree, index_path, write_working_tree


@dataclass(frozen=True)
class RepoState:
    """The code a job sees, as git names it.

    ``tree`` is the git tree hash of the working copy (HEAD + local changes + untracked,
    non-ignored files); ``diff`` is the binary patch from ``commit`` (or the empty tree when
    there is no commit) to ``tree``. ``commit`` + ``diff`` reproduce ``tree`` exactly.
    """

    root: Path
    repo_id: str
    remote_url: str | None
    branch: str | None
    commit: str | None
    tree: str
    diff: bytes


def find_repo_root(start: Path) -> Path:
    """The top folder of the git working copy holding ``start``.

    Raises :class:`RepoError` when ``start`` is not inside a git working copy.
    """
    start = start.resolve()
    if not start.is_dir():
        raise RepoError(f"folder '{start}' does not exist")
    try:
        out = run_git(["rev-parse", "--show-toplevel"], cwd=start)
    except GitCommandError as exc:
        if "not a git repository" in exc.summary:
            raise RepoError(
                f"'{start}' is not inside a git repository",
                "run dstack inside your project's git repository, or create one with `git init`",
            ) from exc
        hint = None
        if "dubious ownership" in exc.summary:
            hint = f"if you trust it, run `git config --global --add safe.directory {start}`"
        raise RepoError(
            f"cannot read the git repository at '{start}': {exc.summary}", hint
        ) from exc
    return Path(out.decode().strip())


def read_repo_state(root: Path, *, is_toplevel: bool = False) -> RepoState:
    """Read remote, branch, commit, working tree hash and local diff of the repo at ``root``.

    Never modifies the user's index or files; may add blobs of changed and untracked files to
    the object store (as ``git add`` would). Raises :class:`RepoError` when git fails.
    ``is_toplevel``: ``root`` is what :func:`find_repo_root` returned (spares a git process).
    """
    if not is_toplevel:
        root = find_repo_root(root)
    # Independent questions, asked at once: each is a git process to start.
    origin = Background(lambda: _origin_url(root))
    branch = Background(lambda: _branch(root))
    index = Background(lambda: index_path(root))
    commit, head_tree = _head(root)
    tree = write_working_tree(root, commit, user_index=index.result())
    remote_url = origin.result()
    return RepoState(
        root=root,
        repo_id=repo_id_for(root, remote_url),
        remote_url=sanitize_remote_url(remote_url) if remote_url else None,
        branch=branch.result(),
        commit=commit,
        tree=tree,
        # A clean working copy is HEAD's tree: nothing to diff.
        diff=b"" if tree == head_tree else diff_to_tree(root, commit, tree),
    )


def _head(root: Path) -> tuple[str | None, str | None]:
    """The HEAD commit and its tree; (None, None) when there is no commit yet."""
    try:
        out = run_git(["rev-parse", "HEAD^{commit}", "HEAD^{tree}"], cwd=root)
    except GitCommandError:
        return None, None
    commit, tree = out.decode().split()
    return commit, tree


def _origin_url(root: Path) -> str | None:
    try:
        out = run_git(["config", "--get", "remote.origin.url"], cwd=root)
    except GitCommandError:  # exit code 1: no such key
        return None
    return out.decode().strip() or None


def _branch(root: Path) -> str | None:
    """The checked-out branch (also on an unborn one); None on a detached HEAD."""
    try:
        out = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=root)
    except GitCommandError:
        return None
    return out.decode().strip() or None
