"""What changed between two recorded trees, for explanations."""

from __future__ import annotations

from pathlib import Path

from dstack.errors import RepoError
from dstack.repo.command import run_git


def changed_paths(root: Path, old_tree: str, new_tree: str, limit: int = 5) -> str | None:
    """`a.py, src/b.py and 3 more`: the files that differ between two trees of this repository.

    None when either is not a tree git knows here (e.g. a `triggers` hash).
    """
    try:
        out = run_git(["diff", "--name-only", "--no-renames", old_tree, new_tree], cwd=root)
    except RepoError:
        return None
    names = out.decode(errors="replace").split()
    if not names:
        return None
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
