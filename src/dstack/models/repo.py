"""The code a run sees."""

from __future__ import annotations

from pydantic import Field

from dstack.models.common import Model


class RepoRef(Model):
    """Exactly which tree a run's jobs see: a commit plus the local changes on top of it."""

    repo_id: str = Field(description="Stable id of the repository (from its remote, or its path).")
    remote_url: str | None = None
    branch: str | None = None
    commit: str | None = Field(None, description="HEAD commit; None in a repo with no commits.")
    tree: str = Field(description="Git tree hash of the working copy as the job sees it.")
    subdir: str = Field("", description="Folder holding `.dstack/`, relative to the repo root.")
    diff_digest: str | None = Field(None, description="Blob: binary diff of local changes.")
    bundle_digest: str | None = Field(None, description="Blob: git bundle of the commit.")
