"""Git bundles: how a commit travels to a runner when no remote it can reach holds it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dstack.errors import RepoError
from dstack.repo.command import GitCommandError, rev_parse, run_git

BUNDLE_REF = "refs/dstack/commit"
"""The one ref a bundle made by :func:`create_bundle` carries; it points at the commit."""


def create_bundle(root: Path, commit: str, target: Path) -> None:
    """Write to ``target`` a git bundle of everything reachable from ``commit``.

    The bundle carries one ref, :data:`BUNDLE_REF`. The user's repository is not changed: the
    ref lives in a temporary repository that borrows the user's objects (``alternates``).
    Raises :class:`RepoError` when ``commit`` is not a commit of the repository at ``root``.
    """
    full = rev_parse(root, f"{commit}^{{commit}}")
    if full is None:
        raise RepoError(
            f"commit '{commit}' is not in the repository at '{root}'",
            "fetch it (`git fetch`) or pick a commit that exists",
        )
    objects = run_git(
        ["rev-parse", "--path-format=absolute", "--git-path", "objects"], cwd=root
    ).decode()
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dstack-bundle-") as tmp:
        scratch = Path(tmp) / "repo.git"
        run_git(["init", "-q", "--bare", scratch], cwd=Path(tmp))
        (scratch / "objects" / "info" / "alternates").write_text(objects.strip() + "\n")
        run_git(["update-ref", BUNDLE_REF, full], cwd=scratch)
        try:
            run_git(["bundle", "create", "-q", target, BUNDLE_REF], cwd=scratch)
        except GitCommandError as exc:
            raise RepoError(f"cannot bundle commit {full[:12]} of '{root}': {exc.summary}") from exc
