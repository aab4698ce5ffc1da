"""What a run records about the code: where it comes from and exactly which tree it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dstack.background import Background
from dstack.errors import RepoError
from dstack.repo.command import GitCommandError, run_git
from dstack.repo.remote_urls import repo_id_for, sanitize_remote_url
from dstack.repo.worktree import diff_to_tree, write_working_tree


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
    start = _existing_dir(start)
    return Path(_rev_parse(start, ["--show-toplevel"]).strip())


@dataclass(frozen=True)
class RepoProbe:
    """What one git process tells of the working copy holding a folder: what
    :func:`find_repo_root` says and what :func:`read_repo_state` asks first."""

    root: Path
    index: Path
    """Where its index is (it may not exist yet)."""
    commit: str | None
    """The HEAD commit; None when there is no commit yet."""
    head_tree: str | None
    branch: str | None
    """The checked-out branch (also an unborn one); None on a detached HEAD."""


_TOP_AND_INDEX = ["--show-toplevel", "--path-format=absolute", "--git-path", "index"]


def probe_repo(start: Path) -> RepoProbe:
    """The working copy holding ``start``: its root, index, HEAD and branch, from one
    ``git rev-parse`` (each git process costs milliseconds at every ``dstack run``).

    Raises :class:`RepoError` as :func:`find_repo_root` does.
    """
    start = _existing_dir(start)
    try:
        head = ["HEAD^{commit}", "HEAD^{tree}", "--abbrev-ref", "HEAD"]
        out = run_git(["rev-parse", *_TOP_AND_INDEX, *head], cwd=start)
        lines = out.decode().split("\n")
    except GitCommandError:
        lines = []  # no commit yet, or not a repository: asked apart below
    if len(lines) == 6 and not lines[5]:
        root, index, commit, tree, branch, _ = lines
        # `--abbrev-ref` names a branch as `symbolic-ref --short` does, and a detached HEAD
        # "HEAD" (which no branch may be called).
        detached = branch == "HEAD"
        return RepoProbe(Path(root), Path(index), commit, tree, None if detached else branch)
    root, index = _rev_parse(start, _TOP_AND_INDEX).split("\n")[:2]
    return RepoProbe(Path(root), Path(index), *_head(Path(root)), _branch(Path(root)))


def _existing_dir(start: Path) -> Path:
    start = start.resolve()
    if not start.is_dir():
        raise RepoError(f"folder '{start}' does not exist")
    return start


def _rev_parse(start: Path, args: list[str]) -> str:
    """``git rev-parse ARGS`` in ``start``; a :class:`RepoError` that says what to do when
    ``start`` is not in a working copy git can read."""
    try:
        out = run_git(["rev-parse", *args], cwd=start)
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
    return out.decode()


def read_repo_state(root: Path, *, probe: RepoProbe | None = None) -> RepoState:
    """Read remote, branch, commit, working tree hash and local diff of the repo holding
    ``root``.

    Never modifies the user's index or files; may add blobs of changed and untracked files to
    the object store (as ``git add`` would). Raises :class:`RepoError` when git fails.
    ``probe``: what :func:`probe_repo` returned for ``root``, when the caller asked already.
    """
    probe = probe or probe_repo(root)
    root = probe.root
    # The one question the probe cannot answer, asked while the tree is written.
    origin = Background(lambda: _origin_url(root))
    tree = write_working_tree(root, probe.commit, user_index=probe.index)
    remote_url = origin.result()
    return RepoState(
        root=root,
        repo_id=repo_id_for(root, remote_url),
        remote_url=sanitize_remote_url(remote_url) if remote_url else None,
        branch=probe.branch,
        commit=probe.commit,
        tree=tree,
        # A clean working copy is HEAD's tree: nothing to diff.
        diff=b"" if tree == probe.head_tree else diff_to_tree(root, probe.commit, tree),
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
