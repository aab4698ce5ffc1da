"""The working copy as a git tree: HEAD plus local changes plus untracked, non-ignored files.

The tree is built in a throw-away index (``GIT_INDEX_FILE`` in a temporary folder) seeded
from a copy of the user's index, so git's stat cache skips unchanged files and the user's
index and files are never touched. Its hash is git's own: the identity of the code.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dstack.repo.command import EMPTY_TREE, run_git
from dstack.repo.dstackignore import exclude_pathspecs, ignored_untracked


def write_working_tree(root: Path, head: str | None, *, user_index: Path | None = None) -> str:
    """Write the tree of the working copy at ``root`` into its object store; return its hash.

    ``head`` is the HEAD commit (None in a repository with no commit yet); ``user_index`` is
    what :func:`index_path` says, when the caller asked already. Respects ``.gitignore``, and
    ``.dstackignore`` for untracked files.
    Adds blob objects for new and changed files to the repository's object store (as
    ``git add`` would), and changes nothing else.
    """
    with tempfile.TemporaryDirectory(prefix="dstack-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        _seed_index(root, head, user_index or index_path(root), index, env)
        left_out = ignored_untracked(root)
        if left_out:
            run_git(
                ["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"],
                cwd=root,
                env=env,
                input=exclude_pathspecs(left_out),
                what="reading the working copy",
            )
        else:
            run_git(["add", "-A", "--", "."], cwd=root, env=env, what="reading the working copy")
        return run_git(["write-tree"], cwd=root, env=env).decode().strip()


def diff_to_tree(root: Path, head: str | None, tree: str) -> bytes:
    """``git diff --binary`` from ``head`` (or the empty tree) to ``tree``: a patch that
    ``git apply --binary`` replays exactly (new, deleted and binary files, mode changes)."""
    base = head or EMPTY_TREE
    args = [
        # User configuration must not change the patch format `git apply` expects.
        *("-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false"),
        "diff",
        "--binary",
        "--full-index",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "--no-relative",
        "--submodule=short",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        base,
        tree,
    ]
    return run_git(args, cwd=root, what="computing the local changes")


def index_path(root: Path) -> Path:
    """Where the index of the working copy at ``root`` is (it may not exist yet)."""
    out = run_git(["rev-parse", "--path-format=absolute", "--git-path", "index"], cwd=root)
    return Path(out.decode().strip())


def _seed_index(root: Path, head: str | None, real: Path, index: Path, env: dict[str, str]) -> None:
    if real.is_file():
        # Copying keeps the stat cache: `git add -A` then hashes only files that changed.
        # copy2 keeps the index's mtime too: git compares it with file mtimes to spot files
        # changed in the same instant the index was written ("racily clean" entries).
        shutil.copy2(real, index)
    elif head:
        run_git(["read-tree", head], cwd=root, env=env)
