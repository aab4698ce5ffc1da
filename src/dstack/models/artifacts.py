"""Artifacts: manifests of content-addressed files, tags, workflow caches, cache explanations."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from dstack.models.common import Model
from dstack.models.digests import new_hasher
from dstack.models.paths import DeclaredPath, EntryPath

MAX_FILE_SIZE = 1 << 50
"""Bytes of one artifact file (1 PiB): a bound for sizes that come in with manifests."""


class FileEntry(Model):
    path: EntryPath = Field(
        description="Relative to the artifact's root, `/`-separated, normalized (no `.`, `..` "
        'or empty names); "" for a single-file artifact.'
    )
    size: int = Field(ge=0, le=MAX_FILE_SIZE, description="Bytes, at most 2^50.")
    mode: int = Field(ge=0, le=0o777, description="Permission bits only, e.g. 0o644 or 0o755.")
    digest: str = Field(description="Digest of the content, hex (`dstack.models.digests`).")


class Manifest(Model):
    """The files of one artifact path of one job (or of one workflow cache path).

    `path` is the artifact path as the workflow declared it (`data`, `model/`, `/output`,
    `~/.cache/pip`); entries are sorted by path. A single-file artifact has one entry with
    path "".
    """

    path: DeclaredPath
    files: list[FileEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_place_per_file(self) -> Manifest:
        """Refuse entries that would overlap when placed: a path twice, a file that is also
        a folder of another entry (`a` and `a/b`), or "" beside other entries."""
        names = {f.path for f in self.files}
        if len(names) != len(self.files):
            raise ValueError(f"manifest {self.path!r} lists a file twice")
        if "" in names and len(names) > 1:
            raise ValueError(f"manifest {self.path!r} mixes a single file with other entries")
        for name in names:
            parent, _, _ = name.rpartition("/")
            while parent:
                if parent in names:
                    raise ValueError(
                        f"manifest {self.path!r} has {parent!r} both as a file and a folder"
                    )
                parent, _, _ = parent.rpartition("/")
        return self

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def digest(self) -> str:
        """Identity of the content: equal manifests have equal digests."""
        h = new_hasher()
        h.update(self.path.encode())
        for f in sorted(self.files, key=lambda e: e.path):
            h.update(f"\0{f.path}\0{f.mode:o}\0{f.digest}".encode())
        return h.hexdigest()


class JobArtifacts(Model):
    """Everything one job (or the job it reused) produced."""

    job_id: str
    run_name: str
    workflow_name: str | None
    manifests: list[Manifest] = Field(default_factory=list)
    node_rank: int = Field(0, ge=0, description="The node of a multi-node job that made them.")


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
    runners: list[str] | None = Field(
        None,
        description="Registered runners that fit the job (resources and labels), by name; "
        "None: not looked at (a job that is reused).",
    )
