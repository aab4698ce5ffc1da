"""Repository credentials (`dstack init`): how runners clone a repository.

One row per repository: the URL runners clone and, encrypted with the secrets' key, a token
or an SSH private key. The secret leaves the server only to a runner, for a job of that
repository it holds while the job is active; users see the URL, the kind and who set it.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import delete

from dstack.errors import ConflictError, NotFoundError
from dstack.models.job import JobStatus
from dstack.models.repo import (
    CloneCredentials,
    CredentialKind,
    RepoCredentials,
    RepoCredentialsRequest,
    RepoCredentialsResponse,
    RepoRef,
)
from dstack.repo.credentials import AccessCheck, check_access
from dstack.repo.remote_urls import sanitize_remote_url
from dstack.server.context import ServerContext
from dstack.server.db.models import JobRow, RepoCredentialRow, RunRow
from dstack.server.errors import Forbidden, InvalidRequestError
from dstack.server.principals import Principal, Role
from dstack.server.services import jobs as job_service
from dstack.server.services.secrets import cipher

MAX_SECRET = 64 * 1024


def require_access(principal: Principal, repo_id: str) -> None:
    """`Forbidden` (403) unless `principal` is an admin or a user who may see `repo_id`."""
    if principal.role is Role.ADMIN or (principal.role is Role.USER and principal.can_see(repo_id)):
        return
    raise Forbidden(f"user '{principal.name}' has no access to repository '{repo_id}'")


async def get_credentials(
    ctx: ServerContext, *, principal: Principal, repo_id: str
) -> RepoCredentials:
    """What is stored for `repo_id` (never the secret); `NotFoundError` when nothing is."""
    require_access(principal, repo_id)
    async with ctx.read() as session:
        row = await session.get(RepoCredentialRow, repo_id)
    if row is None:
        raise NotFoundError(
            f"no clone settings for repository '{repo_id}'", hint="set them with `dstack init`"
        )
    return _to_model(row)


async def set_credentials(
    ctx: ServerContext, *, principal: Principal, request: RepoCredentialsRequest
) -> RepoCredentialsResponse:
    """Store (or replace) how runners clone `request.repo_id`.

    With `request.check`, `git ls-remote` tries the credentials first (outside any
    transaction): a refusal is an `InvalidRequestError` and nothing is stored; a host this
    server cannot reach only adds a warning (runners may reach it when the server cannot).
    """
    require_access(principal, request.repo_id)
    _validate(request)
    warning = None
    if request.check:
        warning = _judge(request, await _check(ctx, request))
    secret = None
    if request.secret:
        secret = cipher(ctx.settings).encrypt(request.secret.encode()).decode()
    async with ctx.transaction() as session:
        row = await session.get(RepoCredentialRow, request.repo_id)
        if row is None:
            row = RepoCredentialRow(repo_id=request.repo_id)
            session.add(row)
        row.url, row.kind, row.secret = request.url, request.kind.value, secret
        row.created_by, row.updated_at = principal.name, ctx.clock()
    return RepoCredentialsResponse(credentials=_to_model(row), warning=warning)


async def delete_credentials(ctx: ServerContext, *, principal: Principal, repo_id: str) -> None:
    """Forget them: later runs of the repository upload bundles. `NotFoundError` if none."""
    require_access(principal, repo_id)
    async with ctx.transaction() as session:
        result = await session.execute(
            delete(RepoCredentialRow).where(RepoCredentialRow.repo_id == repo_id)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFoundError(f"no clone settings for repository '{repo_id}'")


async def clone_credentials(ctx: ServerContext, *, job_id: str, runner_id: str) -> CloneCredentials:
    """The URL and secret to clone the code of `job_id`, for the runner holding it.

    `Forbidden` (403) unless runner `runner_id` holds the job and it is not final;
    `ConflictError` when its run does not clone its code; `NotFoundError` when the job, or the
    repository's settings, are gone.
    """
    async with ctx.read() as session:
        job = await session.get(JobRow, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found", hint="forget it: it was deleted")
        _check_holder(job, runner_id)
        run = await session.get(RunRow, job.run_name)
        repo = RepoRef.model_validate(run.repo) if run is not None else None
        if repo is None or repo.clone_url is None:
            raise ConflictError(f"job {job_id} does not clone its code")
        row = await session.get(RepoCredentialRow, repo.repo_id)
    if row is None:
        raise NotFoundError(
            f"the clone settings of repository '{repo.repo_id}' were removed",
            hint="run `dstack init` again, or submit the run again to upload the code",
        )
    secret = cipher(ctx.settings).decrypt(row.secret.encode()).decode() if row.secret else None
    return CloneCredentials(url=row.url, kind=CredentialKind(row.kind), secret=secret)


def _check_holder(job: JobRow, runner_id: str) -> None:
    job_service.check_holder(job, runner_id)
    if not JobStatus(job.status).is_active():
        raise ConflictError(f"job {job.id} is {job.status}: it needs no code now")


def _validate(request: RepoCredentialsRequest) -> None:
    url = request.url.strip()
    if not url or url.startswith("-") or any(c in url for c in "\n\r\0"):
        raise InvalidRequestError(f"invalid repository URL '{url}'")
    if sanitize_remote_url(url) != url:
        raise InvalidRequestError(
            "the repository URL carries a password or token",
            hint="give the URL without it and the token with `dstack init --token`",
        )
    needs_secret = request.kind is not CredentialKind.NONE
    if needs_secret != bool(request.secret):
        what = "needs a secret" if needs_secret else "takes no secret"
        raise InvalidRequestError(f"credentials of kind '{request.kind.value}' {what}")
    if request.secret and len(request.secret) > MAX_SECRET:
        raise InvalidRequestError("the secret is too long (at most 64 KiB)")


async def _check(ctx: ServerContext, request: RepoCredentialsRequest) -> AccessCheck:
    return await asyncio.to_thread(
        check_access, request.url, request.kind, request.secret, cwd=ctx.settings.server_dir
    )


def _judge(request: RepoCredentialsRequest, check: AccessCheck) -> str | None:
    if check.ok:
        return None
    if check.unreachable:
        return (
            f"this server cannot reach {request.url} ({check.message}); stored anyway: "
            "runs fail at the clone if runners cannot reach it either"
        )
    how = "without credentials" if request.kind is CredentialKind.NONE else "with these credentials"
    raise InvalidRequestError(
        f"cannot read {request.url} {how}: {check.message}",
        hint="check the URL and the token or key (`dstack init --token` / `--ssh-key PATH`)",
    )


def _to_model(row: RepoCredentialRow) -> RepoCredentials:
    return RepoCredentials(
        repo_id=row.repo_id,
        url=row.url,
        kind=CredentialKind(row.kind),
        created_by=row.created_by,
        updated_at=row.updated_at,
    )
