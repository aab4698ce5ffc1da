"""What changed: between two recorded trees (for explanations), and in a diff to upload."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

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


class DiffSummary(NamedTuple):
    """What the diff of local changes carries: `files` as (path, bytes of its part of the
    diff), biggest first; `size`: the whole diff's bytes (what is uploaded)."""

    files: list[tuple[str, int]]
    size: int


_FILE_HEADER = b"diff --git "


def summarize_diff(diff: bytes) -> DiffSummary:
    """Split a `git diff --binary --no-renames` patch by file (see `worktree.diff_to_tree`)."""
    files: list[tuple[str, int]] = []
    starts = [0] if diff.startswith(_FILE_HEADER) else []
    index = diff.find(b"\n" + _FILE_HEADER)
    while index != -1:
        starts.append(index + 1)
        index = diff.find(b"\n" + _FILE_HEADER, index + 1)
    for start, end in zip(starts, [*starts[1:], len(diff)], strict=True):
        header = diff[start : diff.find(b"\n", start)].decode(errors="replace")
        files.append((_path_of(header.removeprefix("diff --git ")), end - start))
    files.sort(key=lambda item: -item[1])
    return DiffSummary(files=files, size=len(diff))


def _path_of(names: str) -> str:
    """`a/P b/P` (no renames: both the same) → `P`; git's C-style quoting undone."""
    half = (len(names) - 1) // 2
    first = names[:half]
    if not first.startswith('"'):
        return first[2:]
    # codecs: only for a file whose encoding is asked
    import codecs

    raw, _ = codecs.escape_decode(first[3:-1].encode())
    return bytes(raw).decode(errors="replace")
