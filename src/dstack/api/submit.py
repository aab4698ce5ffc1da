"""Turn a run plan and the working copy's state into a submitted run.

Pure logic over the typed client, shared by `dstack run` and scripts: uploads the code the jobs
must see (a git bundle once per commit, the diff of local changes) and submits the jobs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dstack.errors import MissingBlobsError
from dstack.models.digests import digest_bytes
from dstack.models.repo import RepoRef
from dstack.models.runs_api import JobSubmission, PlanResponse, SubmitRunRequest
from dstack.repo.git import RepoState, create_bundle, tree_of

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.run import Run
    from dstack.providers.plan import RunPlan


class UploadHooks(Protocol):
    """What a caller sees of the upload of local changes (the CLI: a summary, a question
    above a size, progress)."""

    def uploading(self, diff: bytes) -> AbstractContextManager[Callable[[int], None] | None]:
        """Entered right before `diff` is uploaded; may raise (a `DstackError`) to upload
        and submit nothing. Gives a function called with each chunk's size as it is sent."""
        ...

    def sending_commit(
        self, commit: str, size: int
    ) -> AbstractContextManager[Callable[[int], None] | None]:
        """Entered right before the git bundle of `commit` (`size` bytes) is uploaded (a
        commit no remote the server clones holds); gives a progress function as above."""
        ...


def upload_code(
    client: Client,
    state: RepoState,
    subdir: str,
    cache_dir: Path,
    *,
    trust_memo: bool = False,
    hooks: UploadHooks | None = None,
) -> RepoRef:
    """Make the run's code available to runners and describe it.

    When the server knows how to clone the repository (`dstack init`) and the commit was
    pushed to that remote, runners clone it and no bundle is uploaded. Otherwise the bundle
    of a commit is built and uploaded once: its digest is remembered in
    `cache_dir/bundles/<commit>` and re-uploaded only when the server lost it. The diff of
    local changes is uploaded unless the server has it; an uploaded one is remembered in
    `cache_dir/diffs/<digest>`. With `trust_memo`, what was remembered is not asked about:
    the server refuses the submission (`MissingBlobsError`) if it lost it. `hooks` sees the
    uploads of the bundle and of the diff, when they go.
    """
    clone_url = clone_url_for(client, state)
    bundle_digest = None
    if state.commit and clone_url is None:
        bundle_digest = _upload_bundle(client, state, cache_dir, trust_memo=trust_memo, hooks=hooks)
    diff_digest = None
    if state.diff:
        diff_digest = digest_bytes(state.diff)
        memo = cache_dir / "diffs" / diff_digest
        if not (trust_memo and memo.exists()) and not client.has_blob(diff_digest):
            watch = hooks.uploading(state.diff) if hooks is not None else nullcontext(None)
            with watch as progress, tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp, "diff")
                path.write_bytes(state.diff)
                client.put_blob(path, diff_digest, progress=progress)
        _remember(memo, diff_digest)
    return RepoRef(
        repo_id=state.repo_id,
        remote_url=state.remote_url,
        branch=state.branch,
        commit=state.commit,
        tree=state.tree,
        subdir=subdir,
        diff_digest=diff_digest,
        bundle_digest=bundle_digest,
        clone_url=clone_url,
    )


def clone_url_for(client: Client, state: RepoState) -> str | None:
    """The URL runners clone for this run, or None when the commit must travel as a bundle:
    no commit or remote, no clone settings on the server, or a commit that no
    remote-tracking branch of that URL contains (not pushed, or not fetched since)."""
    if state.commit is None or state.remote_url is None:
        return None
    from dstack.repo.git_remotes import is_pushed  # ~8 ms: only a commit with a remote

    credentials = client.get_repo_credentials(state.repo_id)
    if credentials is None:
        return None
    return credentials.url if is_pushed(state.root, state.commit, credentials.url) else None


def _upload_bundle(
    client: Client,
    state: RepoState,
    cache_dir: Path,
    *,
    trust_memo: bool,
    hooks: UploadHooks | None = None,
) -> str:
    assert state.commit is not None
    memo = cache_dir / "bundles" / state.commit
    if memo.exists():
        digest = memo.read_text().strip()
        if trust_memo or client.has_blob(digest):
            return digest
    # the storage package costs ~6 ms at import: runs of an uploaded commit (above) skip it
    from dstack.storage.base import hash_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "code.bundle")
        create_bundle(state.root, state.commit, path)
        digest = hash_file(path)
        if not client.has_blob(digest):
            size = path.stat().st_size
            watch = (
                hooks.sending_commit(state.commit, size) if hooks is not None else nullcontext(None)
            )
            with watch as progress:
                client.put_blob(path, digest, progress=progress)
    _remember(memo, digest)
    return digest


def _remember(memo: Path, digest: str) -> None:
    """Note that the server had (or was given) blob `digest`; best effort."""
    if memo.exists():
        return
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest)
    except OSError:
        pass  # the next run asks the server again


def code_key(spec_triggers: list[str], state: RepoState, subdir: str) -> str:
    """The code a job sees: the whole tree, or only the files its `triggers` match.

    Patterns are relative to the folder holding `.dstack/` (as `working_dir` is).
    """
    if not spec_triggers:
        return state.tree
    prefix = f"{subdir}/" if subdir else ""
    patterns = [prefix + p.removeprefix("./") for p in spec_triggers]
    return tree_of(state.root, patterns=patterns, tree=state.tree)


def build_request(
    plan: RunPlan,
    state: RepoState,
    *,
    subdir: str,
    tag: str | None = None,
    reload: bool = False,
) -> SubmitRunRequest:
    """The request for `plan`, with each job's code key; its code is not uploaded yet."""
    return SubmitRunRequest(
        repo=RepoRef(repo_id=state.repo_id, tree=state.tree, subdir=subdir),
        workflow_name=plan.workflow_name,
        provider=plan.provider,
        args=plan.run_args,
        variables=plan.variables,
        tag=tag,
        reload=reload,
        jobs=[
            JobSubmission(
                workflow_name=job.workflow_name,
                spec=job.spec,
                deps=job.deps,
                external_deps=job.external_deps,
                code_key=code_key(job.spec.triggers, state, subdir),
            )
            for job in plan.jobs
        ],
    )


def explain(
    client: Client, plan: RunPlan, state: RepoState, *, subdir: str, reload: bool = False
) -> PlanResponse:
    """What the server would do with `plan`: per job, cached (from which run) or why it runs."""
    return client.plan_run(build_request(plan, state, subdir=subdir, reload=reload))


def submit(
    client: Client,
    plan: RunPlan,
    state: RepoState,
    *,
    subdir: str,
    cache_dir: Path,
    tag: str | None = None,
    reload: bool = False,
    hooks: UploadHooks | None = None,
) -> Run:
    # Built before uploading: a bad plan must not leave blobs behind.
    request = build_request(plan, state, subdir=subdir, tag=tag, reload=reload)
    # Code uploaded before is not asked about: one round trip less per run. If the server
    # lost it, it refuses the run, and the code is checked and uploaded before a retry.
    repo = upload_code(client, state, subdir, cache_dir, trust_memo=True, hooks=hooks)
    try:
        return client.submit_run(request.model_copy(update={"repo": repo}))
    except MissingBlobsError:
        repo = upload_code(client, state, subdir, cache_dir, hooks=hooks)
        return client.submit_run(request.model_copy(update={"repo": repo}))
