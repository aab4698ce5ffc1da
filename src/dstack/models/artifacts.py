"""Artifacts: manifests of content-addressed files, tags, workflow caches, cache explanations."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import Field

from dstack.models.common import Model


class FileEntry(Model):
    path: str = Field(description="Relative to the artifact's root, `/`-separated.")
    size: int = Field(ge=0)
    mode: int = Field(description="Permission bits, e.g. 0o644 or 0o755.")
    digest: str = Field(description="sha256 of the content, hex.")


class Manifest(Model):
    """The files of one artifact path of one job (or of one workflow cache path).

    `path` is the artifact path as the workflow declared it (`data`, `model/`, `/output`,
    `~/.cache/pip`); entries are sorted by path. A single-file artifact has one entry with
    path "".
    """

    path: str
    files: list[FileEntry] = Field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def digest(self) -> str:
        """Identity of the content: equal manifests have equal digests."""
        h = hashlib.sha256(self.path.encode())
        for f in sorted(self.files, key=lambda e: e.path):
            h.update(f"\0{f.path}\0{f.mode:o}\0{f.digest}".encode())
        return h.hexdigest()


class JobArtifacts(Model):
    """Everything one job (or the job it reused) produced."""

    job_id: str
    run_name: str
    workflow_name: str | None
    manifests: list[Manifest] = Field(default_factory=list)


class DepArtifacts(JobArtifacts):
    """Artifacts of a dependency, as handed to the runner that must place them."""


class Tag(Model):
    name: str
    run_name: str
    repo_id: str
    workflow_name: str | None = None
    created_at: datetime
    size: int = Field(0, description="Total bytes of the run's artifacts.")


class StorageAccess(Model):
    """How a runner reaches the blob store.

    `local`: the store is the folder `path` on the runner's own machine (the local server),
    read and written directly; `presigned`: blobs go straight to object storage (S3) through
    URLs from `POST /api/blobs/presign`; anything else, or a folder the runner cannot see:
    through the server's `/api/blobs` endpoints.
    """

    kind: str = Field("http", description="`local`, `presigned` or `http`.")
    path: str | None = None


class JobExplanation(Model):
    """Why a job will run, or which earlier run it reuses."""

    index: int
    workflow_name: str | None
    cache_key: str
    cached_from: str | None = Field(None, description="Run whose results are reused.")
    reason: str = Field(description="`cached`, or why it runs: `code changed (src/train.py)`...")
