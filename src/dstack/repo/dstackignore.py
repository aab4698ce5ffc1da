"""`.dstackignore`: untracked files that `dstack run` leaves out of the code it uploads.

Gitignore syntax (read with `pathspec`, imported only when the file exists: start-up time),
at the repository root. Like `.gitignore`, it does not apply to tracked files: a file git
tracks is the code, whatever its size.
"""

from __future__ import annotations

from pathlib import Path

from dstack.repo.command import run_git

IGNORE_FILE = ".dstackignore"


def ignored_untracked(root: Path) -> list[str]:
    """The untracked, not git-ignored files under `root` that `.dstackignore` matches
    (paths relative to `root`); [] without a `.dstackignore`. Raises `RepoError`."""
    ignore_file = root / IGNORE_FILE
    if not ignore_file.is_file():
        return []
    # pathspec: ~15 ms only a repository with a .dstackignore needs
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text(errors="replace").splitlines())
    out = run_git(
        ["ls-files", "-z", "--others", "--exclude-standard", "--full-name"],
        cwd=root,
        what="listing untracked files",
    )
    paths = [p for p in out.decode(errors="surrogateescape").split("\0") if p]
    return [p for p in paths if spec.match_file(p)]


def exclude_pathspecs(paths: list[str]) -> bytes:
    """`git add --pathspec-from-file=- --pathspec-file-nul` input: everything but `paths`."""
    specs = [".", *(f":(exclude,literal){p}" for p in paths)]
    return "\0".join(specs).encode(errors="surrogateescape")
