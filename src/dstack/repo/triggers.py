"""A hash of only the files a job declares it depends on (`triggers` / `inputs` patterns).

It changes iff a matching file is added, removed, renamed, edited or changes mode; edits
elsewhere in the repository leave it alone. It is built from git's blob hashes of the
working-copy tree, so no file is read twice and nothing is rehashed by us.
"""

from __future__ import annotations

from pathlib import Path

from dstack.models.digests import new_hasher
from dstack.repo.command import rev_parse, run_git
from dstack.repo.patterns import matches_any
from dstack.repo.worktree import write_working_tree


def tree_of(root: Path, *, patterns: list[str], tree: str | None = None) -> str:
    """The content digest (hex, `dstack.models.digests`) over the ``(mode, object hash,
    path)`` of the files matching ``patterns``.

    Files come from ``tree`` when given (e.g. :attr:`RepoState.tree`), else from the working
    copy at ``root`` as :func:`read_repo_state` sees it. Pattern syntax:
    :mod:`dstack.repo.patterns`. No match gives the hash of nothing (a stable value).
    """
    if tree is None:
        tree = write_working_tree(root, rev_parse(root, "HEAD^{commit}"))
    listing = run_git(["ls-tree", "-r", "-z", "--full-tree", tree], cwd=root)
    digest = new_hasher()
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, raw_path = entry.partition(b"\t")
        path = raw_path.decode("utf-8", "surrogateescape")
        if matches_any(path, patterns):
            mode, _kind, obj = meta.split(b" ")
            digest.update(mode + b" " + obj + b" " + raw_path + b"\0")
    return digest.hexdigest()
