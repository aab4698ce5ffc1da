"""Moving runs and files between servers and this machine: `dstack push` / `dstack pull`
(a finished run copied between two servers) and `dstack tags add TAG -a PATH` (local files
uploaded as a tagged run).

A copy sends blobs first (only those the target lacks, so an interrupted copy resumes where
it stopped), then the run record with its manifests, then the tag. Every step is idempotent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.api.artifacts import resolve_run
from dstack.errors import ConflictError
from dstack.models.artifacts import JobArtifacts, Manifest
from dstack.models.protocol import ImportRunRequest, UploadRunRequest
from dstack.storage.base import missing_of
from dstack.storage.manifests import scan
from dstack.storage.transfer import Progress, push

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.models.repo import RepoRef
    from dstack.models.run import Run
    from dstack.storage.base import BlobStore


@dataclass(frozen=True)
class Side:
    """One end of a copy: the server's client and its blob store."""

    client: Client
    blobs: BlobStore

    @classmethod
    def of(cls, client: Client) -> Side:
        """The client with the store it reaches (`Client.blob_store`)."""
        return cls(client, client.blob_store())


@dataclass(frozen=True)
class CopyResult:
    run: Run
    copied: int
    present: int
    bytes_copied: int


def copy_run(
    source: Side,
    target: Side,
    ref: str,
    *,
    tags_repo: Callable[[], str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CopyResult:
    """Copy the run `ref` names (`RUN` or `:TAG` of repository `tags_repo()` on the
    source) from `source` to `target`; for `:TAG` the tag is created on the target too.
    `on_progress(total_bytes, 0)` is called once, then `on_progress(0, n)` per copied blob
    of n bytes."""
    name = resolve_run(source.client, ref, tags_repo=tags_repo)
    run = source.client.get_run(name)
    artifacts = keyed_by_job(run, source.client.get_artifacts(name))
    sizes = {f.digest: f.size for a in artifacts for m in a.manifests for f in m.files}
    missing = missing_of(target.blobs, sorted(sizes))
    report = on_progress or (lambda _total, _n: None)
    report(sum(sizes[d] for d in missing), 0)
    for digest in missing:
        copy_blob(source.blobs, target.blobs, digest)
        report(0, sizes[digest])
    copied = target.client.import_run(ImportRunRequest(run=run, artifacts=artifacts))
    if ref.startswith(":"):
        _ensure_tag(target.client, ref[1:], copied)
    return CopyResult(
        run=copied,
        copied=len(missing),
        present=len(sizes) - len(missing),
        bytes_copied=sum(sizes[d] for d in missing),
    )


def copy_blob(source: BlobStore, target: BlobStore, digest: str) -> None:
    """Through a temporary file: blobs may be larger than memory; both ends verify it."""
    with tempfile.TemporaryDirectory(prefix="dstack-copy-") as tmp:
        path = Path(tmp) / digest
        source.get_file(digest, path)
        target.put_file(path, digest)


def keyed_by_job(run: Run, artifacts: list[JobArtifacts]) -> list[JobArtifacts]:
    """The run's artifacts keyed by its own job ids: a cached job's entry names the job it
    reused (another run), and the copy must attach the manifests to the job itself."""
    pending = sorted(run.jobs, key=lambda j: j.index)
    result = []
    for item in artifacts:
        job = next(
            (
                j
                for j in pending
                if j.id == item.job_id
                or (j.reused_from == item.run_name and j.workflow_name == item.workflow_name)
            ),
            None,
        )
        if job is None:
            continue
        pending = pending[pending.index(job) + 1 :]
        result.append(
            JobArtifacts(
                job_id=job.id,
                run_name=run.name,
                workflow_name=job.workflow_name,
                manifests=item.manifests,
            )
        )
    return result


def _ensure_tag(client: Client, tag: str, run: Run) -> None:
    """Tag the copied run `tag` in its repository there (unless it is already)."""
    run_name = run.name
    for existing in client.list_tags(repo_id=run.repo.repo_id):
        if existing.name == tag:
            if existing.run_name != run_name:
                raise ConflictError(
                    f"tag '{tag}' already names run {existing.run_name} there",
                    hint=f"delete it there first: dstack tags delete {tag}",
                )
            return
    client.add_tag(tag, run_name)


# --- uploads: local files as a tagged run ----------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """A local file or folder and the manifest of what it holds (`scan_uploads`)."""

    source: Path
    manifest: Manifest


def scan_uploads(paths: list[Path], cwd: Path) -> list[Upload]:
    """Each path's manifest, named as jobs will see it: relative to `cwd` when inside it,
    else by its own name."""
    uploads = []
    for path in paths:
        source = path.resolve()
        uploads.append(Upload(source, scan(source, _declared(source, cwd))))
    return uploads


def upload_tagged(
    client: Client,
    tag: str,
    uploads: list[Upload],
    repo: RepoRef,
    *,
    progress: Progress | None = None,
) -> Run:
    """Send the blobs of `uploads` the server lacks (`progress(n)` per n bytes), then make
    them a finished run of `repo` tagged `tag`. Run again after a failure, it sends only
    what is still missing."""
    store = client.blob_store()
    for upload in uploads:
        push(upload.manifest, upload.source, store, progress=progress)
    manifests = [u.manifest for u in uploads]
    return client.upload_run(UploadRunRequest(tag=tag, repo=repo, manifests=manifests))


def _declared(resolved: Path, cwd: Path) -> str:
    try:
        return resolved.relative_to(cwd).as_posix()
    except ValueError:
        return resolved.name
