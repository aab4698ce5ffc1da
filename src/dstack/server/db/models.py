"""Tables. Specs and histories are JSON columns holding the models' JSON form."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement, TextClause

from dstack.server.db.base import Base, UTCDateTime


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # The web UI's runs list: newest first, paged by (submitted_at, name) keys.
        Index("ix_runs_submitted_name", "submitted_at", "name"),
        Index("ix_runs_repo_submitted_name", "repo_id", "submitted_at", "name"),
    )

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    name_prefix: Mapped[str] = mapped_column(String(100), index=True)
    name_counter: Mapped[int] = mapped_column(Integer)
    repo_id: Mapped[str] = mapped_column(String(500), index=True)
    repo: Mapped[dict[str, Any]] = mapped_column(JSON)
    workflow_name: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    args: Mapped[list[str]] = mapped_column(JSON)
    variables: Mapped[dict[str, str]] = mapped_column(JSON)
    tag: Mapped[str | None] = mapped_column(String(200))
    user: Mapped[str] = mapped_column(String(200))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # What a re-run submits again (`services/reruns.py`): the `SubmitRunRequest` and, per
    # job, the runs its external deps resolved to. None for runs uploaded, imported, or
    # submitted before re-runs existed.
    submission: Mapped[dict[str, Any] | None] = mapped_column(JSON)


UNFINISHED_JOB: TextClause = text("status NOT IN ('done', 'failed', 'stopped', 'aborted')")
"""The predicate of `ix_jobs_unfinished`; a query uses the index by stating it as it is."""
_STATUS_WORD = re.compile(r"[a-z_]+")


def job_status_in(statuses: Iterable[str]) -> ColumnElement[bool]:
    """`jobs.status IN (…)` for constant statuses, written into the statement's SQL.

    `in_` of plain values binds them as one expanding parameter, which SQLAlchemy rewrites
    into the SQL again on every execution: a tenth of a runner's claim. Statuses are fixed
    words (checked), so they can stand in the SQL and the statement compiles once.
    """
    words = list(statuses)
    if not all(_STATUS_WORD.fullmatch(word) for word in words):
        raise ValueError(f"not job statuses: {words}")
    return JobRow.__table__.c.status.in_([literal_column(f"'{word}'") for word in words])


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_submitted", "status", "submitted_at"),
        # The scheduler's deadlines: jobs of one status that entered it before a time.
        Index("ix_jobs_status_at", "status", "status_at"),
        # `dstack ps`: the runs with an unfinished job, a handful among millions of finished
        # jobs (a partial index: the planners' statistics favour scanning for a status
        # that most rows have not). Partial (`WHERE UNFINISHED_JOB`) on both databases, as
        # migration 0013 makes it; not said here with `sqlite_where`/`postgresql_where`:
        # those load PostgreSQL's dialect (~30 ms) in every server's start, SQLite's too.
        Index("ix_jobs_unfinished", "run_name"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_name: Mapped[str] = mapped_column(ForeignKey("runs.name", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    workflow_name: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    deps: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    runner_id: Mapped[str | None] = mapped_column(String(32), index=True)
    gpu_indexes: Mapped[list[int]] = mapped_column(JSON)
    host_ports: Mapped[list[int]] = mapped_column(JSON)
    cache_key: Mapped[str | None] = mapped_column(String(100), index=True)
    reused_from: Mapped[str | None] = mapped_column(String(100))
    # The job whose artifacts a cached job reuses (its manifests are copied, so this is only
    # what the user is shown; the origin may be deleted later).
    reused_job_id: Mapped[str | None] = mapped_column(String(32))
    # What the cache key was made of (`caching.CacheInputs`), to explain the next miss.
    cache_inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Why the job ran, or `cached`: the cache's decision at submit (`caching` lists them).
    cache_reason: Mapped[str | None] = mapped_column(Text)
    # `DepArtifacts` of the resolved tags and `X:latest`, fixed when the run was submitted.
    external_artifacts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # "stop" or "abort": asked of the runner through its next heartbeat.
    stop_requested: Mapped[str | None] = mapped_column(String(10))
    # Bumped by every status change; a change applies only if nobody changed the job since
    # it was read (optimistic lock, portable to PostgreSQL).
    version: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the job entered its current status (`set_status` stamps it); deadlines count
    # from it.
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When every app of the job first answered on its port; None: not yet (or no apps).
    apps_ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A finished job's API JSON, zlib-compressed, written when it finishes (`jobs.api_json`):
    # listings splice it. None: unfinished, or finished before migration 0014.
    api_json: Mapped[bytes | None] = mapped_column(LargeBinary)


class RunnerRow(Base):
    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    # Where other runners reach it (`dstack-runner start --address`); None: an older runner.
    address: Mapped[str | None] = mapped_column(String(200))
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    executors: Mapped[list[str]] = mapped_column(JSON)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    backend: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # sha256 of the runner's own credential, issued at registration; None: none issued yet.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LogRow(Base):
    __tablename__ = "logs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    stream: Mapped[str] = mapped_column(String(10))
    data: Mapped[str] = mapped_column(Text)


class ManifestRow(Base):
    """One artifact path of one job. A cached job holds copies of its origin's rows."""

    __tablename__ = "job_manifests"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TagRow(Base):
    """A tag: a name, unique within its repository, pointing at a successful run of it."""

    __tablename__ = "tags"

    repo_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_name: Mapped[str] = mapped_column(ForeignKey("runs.name"), index=True)
    workflow_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkflowCacheRow(Base):
    """A saved `cache:` path of a workflow; `workflow_name` is "" for provider runs."""

    __tablename__ = "workflow_caches"

    repo_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    workflow_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BlobTouchRow(Base):
    """When a blob was last announced (uploaded, or asked about before an upload).

    Garbage collection spares blobs touched within the grace period, so a blob whose
    manifest has not arrived yet is never deleted.
    """

    __tablename__ = "blob_touches"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    touched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A user and the sha256 of their token (the token itself is shown once, never stored)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean)
    # repo_ids the user may see; None: every repository.
    repos: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunnerTokenRow(Base):
    """A runner registration token (hashed); accepted only on the runner endpoints."""

    __tablename__ = "runner_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SecretRow(Base):
    """A secret of one repository, or global (`repo_id` = "": an admin's, seen by every
    repository's jobs); `value` is the Fernet token of the value, never the value itself."""

    __tablename__ = "secrets"

    repo_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RepoCredentialRow(Base):
    """How runners clone a repository (`dstack init`): its remote URL and, encrypted with the
    secrets key, a token or an SSH private key. `kind`: `none`, `token` or `ssh-key`."""

    __tablename__ = "repo_credentials"

    repo_id: Mapped[str] = mapped_column(String(500), primary_key=True)
    url: Mapped[str] = mapped_column(String(1000))
    kind: Mapped[str] = mapped_column(String(20))
    secret: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServerMetaRow(Base):
    """Facts about this server kept in its database, e.g. `server_id` (generated once), which
    runners label their containers with."""

    __tablename__ = "server_meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class BackendRow(Base):
    """A cloud backend an admin added: its settings (`models.backends.BackendConfig` less the
    name and type, which have columns) and, encrypted with the secrets key, its
    `BackendCredentials` as JSON."""

    __tablename__ = "backends"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    credentials: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstanceRow(Base):
    """A cloud instance this server created (or is creating), from the decision to create it
    until it is terminated; kept afterwards for costs and `dstack ps` of old runs.

    `state`: `creating` (asked of the cloud), `booting` (created, its runner not registered
    yet), `ready` (its runner registered: `runner_id`), `terminating`, `terminated`.
    `token_hash`: sha256 of the registration credential in its user data, good for
    registering this instance's runner only."""

    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_backend_state", "backend", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    backend: Mapped[str] = mapped_column(String(100))
    cloud_id: Mapped[str | None] = mapped_column(String(100), index=True)
    offer: Mapped[dict[str, Any]] = mapped_column(JSON)
    instance_type: Mapped[str] = mapped_column(String(100))
    region: Mapped[str] = mapped_column(String(50))
    spot: Mapped[bool] = mapped_column(Boolean)
    price: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    runner_id: Mapped[str | None] = mapped_column(String(32), index=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Since when its runner holds no job; None while it holds one (or before it registered).
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UiSessionRow(Base):
    """A signed-in browser (`dstack.ui`): the sha256 of its opaque session id (the cookie
    holds the id itself), whose token signed it in (its hash: a new token or a deleted user
    ends the session), its CSRF token, and when it expires. Sign-in codes (`dstack ui`) are
    rows with `kind` "code": single use, a minute long."""

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    user_name: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
