"""Putting a job's code into its directory: download the recorded blobs, rebuild the tree."""

from __future__ import annotations

from pathlib import Path

from dstack.models.repo import RepoRef
from dstack.runner.api import RunnerApi


def fetch_code(api: RunnerApi, repo: RepoRef, job_dir: Path) -> Path:
    """Download the bundle and diff of `repo` into `job_dir` and check the tree out.

    Returns `<job_dir>/code`, which then holds exactly the recorded tree. Raises the
    `ServerError`/`RepoError` of the step that failed.
    """
    from dstack.repo import materialize

    bundle = _download(api, repo.bundle_digest, job_dir / "repo.bundle")
    diff = _download(api, repo.diff_digest, job_dir / "repo.diff")
    code_dir = job_dir / "code"
    materialize(
        code_dir,
        commit=repo.commit,
        bundle=bundle,
        diff=diff,
        remote_url=repo.remote_url,
        branch=repo.branch,
        expected_tree=repo.tree,
    )
    return code_dir


def _download(api: RunnerApi, digest: str | None, target: Path) -> Path | None:
    if digest is None:
        return None
    api.get_blob(digest, target)
    return target
