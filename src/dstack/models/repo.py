"""The code a run sees, and how runners may clone the repository it comes from."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from dstack.models.common import Model


class RepoRef(Model):
    """Exactly which tree a run's jobs see: a commit plus the local changes on top of it.

    The commit reaches the runner either as a git bundle (`bundle_digest`) or, when
    `clone_url` is set, as a clone of that URL with the credentials `dstack init` stored.
    """

    repo_id: str = Field(
        max_length=500, description="Stable id of the repository (from its remote, or its path)."
    )
    remote_url: str | None = None
    branch: str | None = None
    commit: str | None = Field(None, description="HEAD commit; None in a repo with no commits.")
    tree: str = Field(description="Git tree hash of the working copy as the job sees it.")
    subdir: str = Field("", description="Folder holding `.dstack/`, relative to the repo root.")
    diff_digest: str | None = Field(None, description="Blob: binary diff of local changes.")
    bundle_digest: str | None = Field(None, description="Blob: git bundle of the commit.")
    clone_url: str | None = Field(
        None,
        description="Runners clone this URL (never with a secret in it) at `commit`, with the "
        "credentials the server holds for `repo_id`, instead of reading a bundle.",
    )


class CredentialKind(StrEnum):
    """How runners authenticate to a repository's remote."""

    NONE = "none"
    TOKEN = "token"
    SSH_KEY = "ssh-key"


class RepoCredentials(Model):
    """What the server shows of a repository's clone settings: never the secret."""

    repo_id: str
    url: str = Field(description="The URL runners clone, without any secret in it.")
    kind: CredentialKind
    created_by: str
    updated_at: datetime


class RepoCredentialsRequest(Model):
    """`dstack init`: store (or replace) how runners clone `repo_id`."""

    repo_id: str
    url: str
    kind: CredentialKind
    secret: str | None = Field(None, description="The token or the SSH private key.")
    check: bool = Field(True, description="Try the credentials with `git ls-remote` first.")


class RepoCredentialsResponse(Model):
    credentials: RepoCredentials
    warning: str | None = Field(
        None, description="Set when the check could not reach the remote (stored anyway)."
    )


class CloneCredentials(Model):
    """What a runner gets for the job it holds: the URL and the secret to clone it with."""

    url: str
    kind: CredentialKind
    secret: str | None = None
