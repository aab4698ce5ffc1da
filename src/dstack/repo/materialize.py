"""Rebuilding on a runner exactly the tree a run recorded: commit, then the local diff.

The result is a git working copy: a ``.git`` folder plus the recorded files and nothing else
(no file the tree lacks). Keeping ``.git`` lets jobs ask git about their code
(``git rev-parse HEAD``, ``git diff``), as they could on the user's machine.
"""

from __future__ import annotations

from pathlib import Path

from dstack.errors import RepoError
from dstack.repo.bundle import BUNDLE_REF
from dstack.repo.command import GitCommandError, rev_parse, run_git

# Checkouts on a runner must not depend on that machine's git configuration. Appended to the
# fresh repository's config file as text: one write instead of a `git config` process per key
# (git reads repeated sections as one, later keys winning).
_TARGET_CONFIG = "[core]\n\tautocrlf = false\n\tfilemode = true\n[advice]\n\tdetachedHead = false\n"


def materialize(
    target: Path,
    *,
    commit: str | None,
    bundle: Path | None,
    diff: Path | None,
    remote_url: str | None = None,
    branch: str | None = None,
    expected_tree: str | None = None,
    mirror: Path | None = None,
) -> None:
    """Make ``target`` (absent or an empty folder) hold the recorded tree.

    ``commit`` comes from ``bundle`` when given, else from ``mirror`` (a local repository
    holding it under :func:`mirror_ref`, maybe shallow), else is fetched from ``remote_url``;
    with no commit the tree is the diff alone. ``diff`` (a ``git diff --binary`` file) is
    applied on top. With ``branch`` the checkout is on a branch of that name (else detached).
    With ``expected_tree`` the result is checked against it. Raises :class:`RepoError` saying
    what went wrong; ``target`` may then hold a partial checkout.
    """
    target = _prepare_target(target)
    run_git(["init", "-q", target], cwd=target)
    _configure(target)
    if remote_url:
        run_git(["remote", "add", "origin", remote_url], cwd=target)
    if commit is not None:
        _fetch_commit(target, commit, bundle=bundle, remote_url=remote_url, mirror=mirror)
        _checkout(target, commit, branch)
    elif branch:
        run_git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=target)
    if diff is not None and _size(diff) > 0:
        _apply(target, diff, commit)
    if expected_tree is not None:
        _verify(target, expected_tree)


def _configure(target: Path) -> None:
    try:
        with (target / ".git" / "config").open("a", encoding="utf-8") as config:
            config.write(_TARGET_CONFIG)
    except OSError as exc:
        raise RepoError(f"cannot configure the checkout in '{target}': {exc.strerror}") from exc


def _prepare_target(target: Path) -> Path:
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RepoError(
            f"cannot put the code into '{target}': it exists and is not an empty folder",
            "remove it or choose another folder",
        )
    target.mkdir(parents=True, exist_ok=True)
    return target


def _size(diff: Path) -> int:
    try:
        return diff.stat().st_size
    except OSError as exc:
        raise RepoError(f"cannot read the recorded local changes '{diff}': {exc.strerror}") from exc


def mirror_ref(commit: str) -> str:
    """The ref under which a runner's mirror of a remote keeps ``commit`` (so that git's
    garbage collection keeps it, and a checkout can fetch it by name)."""
    return f"refs/dstack/commits/{commit}"


def _fetch_commit(
    target: Path,
    commit: str,
    *,
    bundle: Path | None,
    remote_url: str | None,
    mirror: Path | None = None,
) -> None:
    extra: list[str] = []
    if bundle is not None:
        source, refspec, where = str(bundle.resolve()), f"+{BUNDLE_REF}:{BUNDLE_REF}", "the bundle"
    elif mirror is not None:
        # A shallow mirror gives a shallow checkout; git refuses that without the flag.
        source, refspec, where = str(mirror), f"+{mirror_ref(commit)}:{BUNDLE_REF}", "the mirror"
        extra = ["--update-shallow"]
    elif remote_url:
        source, refspec, where = remote_url, commit, f"'{remote_url}'"
    else:
        raise RepoError(
            f"cannot get commit {commit[:12]}: the run has neither a bundle nor a remote URL",
            "push the commit to a remote the runner can reach, or re-run to upload a bundle",
        )
    try:
        run_git(["fetch", "-q", "--no-tags", *extra, source, refspec], cwd=target)
    except GitCommandError as exc:
        raise RepoError(
            f"cannot fetch commit {commit[:12]} from {where}: {exc.summary}",
            "check that the commit was pushed and the runner can reach the remote",
        ) from exc
    if rev_parse(target, f"{commit}^{{commit}}") is None:
        raise RepoError(f"{where} does not contain commit {commit[:12]}")


def _checkout(target: Path, commit: str, branch: str | None) -> None:
    args = ["checkout", "-q", "-B", branch, commit] if branch else ["checkout", "-q", commit]
    try:
        run_git(args, cwd=target)
    except GitCommandError as exc:
        raise RepoError(f"cannot check out commit {commit[:12]}: {exc.summary}") from exc


def _apply(target: Path, diff: Path, commit: str | None) -> None:
    # `--index` applies to the files and the index together, so the result can be checked
    # with `write-tree` even for files the repository's .gitignore would hide.
    args = ["apply", "--index", "--binary", "--whitespace=nowarn", str(diff.resolve())]
    try:
        run_git(args, cwd=target)
    except GitCommandError as exc:
        base = f"commit {commit[:12]}" if commit else "an empty repository"
        raise RepoError(
            f"the recorded local changes do not apply on {base}: {exc.summary}",
            "the diff and the commit do not belong together; submit the run again",
        ) from exc


def _verify(target: Path, expected_tree: str) -> None:
    actual = run_git(["write-tree"], cwd=target).decode().strip()
    if actual != expected_tree:
        raise RepoError(
            f"the code in '{target}' is tree {actual[:12]}, not the recorded {expected_tree[:12]}",
            "submit the run again; if it persists, report it with the two hashes",
        )
