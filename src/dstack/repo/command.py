"""Running the `git` command line: the one door through which this package touches git.

Every call gets a clean environment (no inherited ``GIT_DIR``/``GIT_INDEX_FILE`` from a hook
or a wrapper, no credential prompts) and every failure becomes a :class:`RepoError` whose
message carries git's own complaint in one line.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dstack.errors import RepoError

# Variables that would point git at another repository, index or object store than the one
# we name explicitly (they leak in when dstack itself runs inside a git hook).
_REPO_LOCAL_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_NAMESPACE",
)


class GitCommandError(RepoError):
    """git ran and exited non-zero; ``summary`` is its complaint in one line."""

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message)
        self.summary = summary


EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
"""Hash of git's empty tree: the base of the diff in a repository with no commit."""


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git subprocess: ours, minus repo-pointing variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_LOCAL_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"  # a missing credential must fail, not hang on a prompt
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never refresh the user's index behind their back
    env["LC_ALL"] = "C"  # git's messages in English, so summaries read the same everywhere
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    what: str | None = None,
    timeout: float | None = None,
) -> bytes:
    """Run ``git ARGS`` in ``cwd`` and return its stdout.

    ``env`` adds variables to :func:`git_env`. ``what`` names the operation for the error
    message (default: the git subcommand). Raises :class:`RepoError` when git is missing,
    ``cwd`` does not exist, and :class:`GitCommandError` when git exits non-zero or runs
    longer than ``timeout`` seconds (then it is killed).
    """
    argv = ["git", *(os.fspath(a) for a in args)]
    label = what or f"git {argv[1]}"
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=git_env(env),
            input=input,
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        summary = f"no answer within {timeout:g} s"
        raise GitCommandError(f"{label} failed in '{cwd}': {summary}", summary) from exc
    except FileNotFoundError as exc:
        if not cwd.is_dir():
            raise RepoError(f"folder '{cwd}' does not exist") from exc
        raise RepoError(
            "git is not installed (or not on PATH)", "install git, e.g. `apt-get install git`"
        ) from exc
    except OSError as exc:
        raise RepoError(f"cannot run git in '{cwd}': {exc.strerror or exc}") from exc
    if done.returncode != 0:
        summary = summarize_stderr(done.stderr)
        raise GitCommandError(f"{label} failed in '{cwd}': {summary}", summary)
    return done.stdout


def summarize_stderr(stderr: bytes) -> str:
    """One line out of git's stderr: its ``fatal:``/``error:`` line, else its last line.
    git's generic "Could not read from remote repository." is led by the line before it:
    ssh's own reason (a refused key, a changed host key, a refused connection)."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    for index, line in enumerate(lines):
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                found = line[len(prefix) :]
                if found.startswith("Could not read from remote") and index > 0:
                    return f"{lines[index - 1]} {found}"
                return found
    return lines[-1] if lines else "no error message"


def rev_parse(cwd: Path, *args: str) -> str | None:
    """``git rev-parse --verify -q ARGS`` as a string, or None when it does not resolve."""
    try:
        out = run_git(["rev-parse", "--verify", "-q", *args], cwd=cwd)
    except GitCommandError:
        return None
    return out.decode().strip() or None
