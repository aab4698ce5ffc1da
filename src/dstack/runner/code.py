"""Putting a job's code into its directory: fetch the recorded blobs, rebuild the tree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dstack.api.runner import RunnerApi
from dstack.errors import NotFoundError
from dstack.models.repo import RepoRef
from dstack.repo import materialize
from dstack.runner.checkouts import CheckoutCache
from dstack.runner.clone import GitTimeouts, clone_code
from dstack.storage.base import BlobStore


def fetch_code(
    api: RunnerApi,
    repo: RepoRef,
    job_dir: Path,
    *,
    local_store: BlobStore | None = None,
    job_id: str | None = None,
    mirrors_dir: Path | None = None,
    checkouts: CheckoutCache | None = None,
    git_timeouts: GitTimeouts = GitTimeouts(),
) -> Path:
    """Fetch the bundle and diff of `repo` into `job_dir` and check the tree out.

    `local_store` (the server's blob folder, when this runner can read it) is read directly,
    which spares two HTTP round trips per job; a blob it lacks is downloaded from the API.
    Both blobs are fetched at the same time and each is verified against its digest.
    A run with `repo.clone_url` is cloned instead of read from a bundle: the runner asks the
    server for the credentials of job `job_id` (default: `job_dir`'s name) and keeps a mirror
    per URL in `mirrors_dir` (default: `mirrors` beside the jobs' folder), within
    `git_timeouts`.
    With `checkouts`, an earlier checkout of the same code is copied instead, and a fresh
    one is kept there for the next jobs.
    Returns `<job_dir>/code`, which then holds exactly the recorded tree. Raises the
    `ServerError`/`RepoError` of the step that failed.
    """
    code_dir = job_dir / "code"
    if checkouts is not None and checkouts.copy_to(repo, code_dir):
        return code_dir
    if repo.clone_url is not None:
        _clone(api, repo, job_dir, local_store, job_id, mirrors_dir, git_timeouts)
    else:
        _check_out(api, repo, job_dir, local_store)
    if checkouts is not None:
        checkouts.save(repo, code_dir)
    return code_dir


def _check_out(api: RunnerApi, repo: RepoRef, job_dir: Path, local_store: BlobStore | None) -> None:
    """The bundle and the diff of `repo`, checked out into `<job_dir>/code`."""
    wanted = [
        (repo.bundle_digest, job_dir / "repo.bundle"),
        (repo.diff_digest, job_dir / "repo.diff"),
    ]
    todo = [(digest, target) for digest, target in wanted if digest is not None]
    if len(todo) > 1:
        with ThreadPoolExecutor(len(todo)) as pool:
            for future in [pool.submit(_fetch, api, local_store, d, t) for d, t in todo]:
                future.result()
    else:
        for digest, target in todo:
            _fetch(api, local_store, digest, target)
    bundle, diff = (target if digest is not None else None for digest, target in wanted)
    materialize(
        job_dir / "code",
        commit=repo.commit,
        bundle=bundle,
        diff=diff,
        remote_url=repo.remote_url,
        branch=repo.branch,
        expected_tree=repo.tree,
    )


def _fetch(api: RunnerApi, store: BlobStore | None, digest: str, target: Path) -> None:
    if store is not None:
        try:
            store.get_file(digest, target)  # a verified copy, as the download would be
            return
        except NotFoundError:
            pass  # not in this folder (another store holds the code): ask the server
    api.get_blob(digest, target)


def _clone(
    api: RunnerApi,
    repo: RepoRef,
    job_dir: Path,
    store: BlobStore | None,
    job_id: str | None,
    mirrors_dir: Path | None,
    git_timeouts: GitTimeouts,
) -> Path:
    credentials = api.get_repo_credentials(job_id or job_dir.name)
    diff = None
    if repo.diff_digest is not None:
        diff = job_dir / "repo.diff"
        job_dir.mkdir(parents=True, exist_ok=True)
        _fetch(api, store, repo.diff_digest, diff)
    code_dir = job_dir / "code"
    mirrors = mirrors_dir or job_dir.resolve().parent.parent / "mirrors"
    clone_code(credentials, repo, code_dir, diff=diff, mirrors_dir=mirrors, timeouts=git_timeouts)
    return code_dir
