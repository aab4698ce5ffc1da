"""Users, the admin token, runner registration tokens and runners' credentials, and who may
see which run.

Tokens are random (`secrets.token_urlsafe`), so a plain sha256 is a safe way to keep them:
only hashes are stored; a token is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from dstack.errors import ConflictError, NotFoundError
from dstack.models.protocol import CreateUserRequest, CreateUserResponse, User
from dstack.server.context import ServerContext
from dstack.server.db.models import InstanceRow, RunnerRow, RunnerTokenRow, RunRow, UserRow
from dstack.server.errors import InvalidRequestError
from dstack.server.principals import Principal, Role

LOCAL_RUNNER_LABEL = "local"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


# --- authentication -------------------------------------------------------------------------
async def authenticate(ctx: ServerContext, token: str) -> Principal | None:
    """The principal `token` belongs to; None when it is unknown or revoked.

    A user's token, a runner registration token (`runner_id` None: it may only register), or
    a runner's own credential (`runner_id` set: the runner is the one found by the token's
    hash, nothing else). A registration token configured in the settings is compared without
    the database; a known token is remembered for `settings.auth_cache_seconds`
    (`ctx.principals`, which every change to users, tokens and runners here clears, so a
    revocation in this process holds at once).
    """
    configured = ctx.settings.runner_token
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        return Principal(name="runner", role=Role.RUNNER)
    digest = hash_token(token)
    principal = ctx.principals.get(digest)
    if principal is None:
        generation = ctx.principals.generation
        principal = await _lookup(ctx, digest)
        if principal is not None:
            ctx.principals.put(digest, principal, generation=generation)
    return principal


async def _lookup(ctx: ServerContext, digest: str) -> Principal | None:
    # Runners' credentials first: a busy fleet's runners send most requests, each looking
    # its credential up again once the cache forgets it.
    async with ctx.read() as session:
        runner = (
            await session.execute(
                select(RunnerRow.id, RunnerRow.name).where(RunnerRow.token_hash == digest)
            )
        ).first()
        if runner is not None:
            return Principal(name=f"runner:{runner.name}", role=Role.RUNNER, runner_id=runner.id)
        user = await session.scalar(select(UserRow).where(UserRow.token_hash == digest))
        if user is not None:
            return _principal(user)
        registration = await session.get(RunnerTokenRow, digest)
        if registration is not None:
            return Principal(name=f"runner:{registration.label}", role=Role.RUNNER)
        instance = await session.scalar(
            select(InstanceRow.name).where(InstanceRow.token_hash == digest)
        )
    if instance is not None:
        return Principal(name=f"instance:{instance}", role=Role.RUNNER, instance=instance)
    return None


def _principal(row: UserRow) -> Principal:
    repos = None if row.repos is None else frozenset(row.repos)
    return Principal(name=row.name, role=Role.ADMIN if row.is_admin else Role.USER, repos=repos)


# --- the admin ------------------------------------------------------------------------------
async def bootstrap_admin(ctx: ServerContext) -> str | None:
    """Make sure the admin user exists; return its token when it was generated just now.

    `settings.token` (`DSTACK_SERVER_ADMIN_TOKEN`) always wins: the admin's hash is set to it
    on every start. Without it, the first start generates a token, writes it to
    `server_dir/admin_token` (mode 0600) and returns it so it can be printed once; later
    starts keep the stored hash. Servers sharing one database may race here: the loser of
    the insert keeps the winner's token.
    """
    settings = ctx.settings
    token = settings.token
    async with ctx.transaction() as session:
        row = await session.get(UserRow, settings.user)
        if row is not None and token is None:
            row.is_admin = True
            return None
        if row is not None and token is not None:
            row.token_hash, row.is_admin, row.repos = hash_token(token), True, None
            return None
    generated = token is None
    token = token or new_token()
    try:
        async with ctx.transaction() as session:
            session.add(_user_row(settings.user, token, True, None, ctx))
    except IntegrityError:
        return None
    if generated:
        write_private(settings.files.admin_token, token)
        return token
    return None


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- users ----------------------------------------------------------------------------------
async def list_users(ctx: ServerContext) -> list[User]:
    async with ctx.transaction() as session:
        rows = (await session.scalars(select(UserRow).order_by(UserRow.name))).all()
    return [_to_model(row) for row in rows]


async def get_user(ctx: ServerContext, *, name: str) -> User:
    async with ctx.transaction() as session:
        row = await session.get(UserRow, name)
    if row is None:
        raise NotFoundError(f"user '{name}' not found", hint="see `dstack users list`")
    return _to_model(row)


async def create_user(ctx: ServerContext, *, request: CreateUserRequest) -> CreateUserResponse:
    """A new user with a fresh token (returned once). `ConflictError` if the name is taken."""
    _check_name(request.name)
    token = new_token()
    row = _user_row(request.name, token, request.is_admin, request.repos, ctx)
    try:
        async with ctx.transaction() as session:
            if await session.get(UserRow, request.name) is not None:
                raise _taken(request.name)
            session.add(row)
    except IntegrityError:
        raise _taken(request.name) from None
    return CreateUserResponse(user=_to_model(row), token=token)


async def delete_user(ctx: ServerContext, *, name: str) -> None:
    """Remove the user, which revokes their token at once. The server's own admin (the one
    `settings.user` names) cannot be removed: it would lock everyone out."""
    if name == ctx.settings.user:
        raise InvalidRequestError(
            f"user '{name}' is the server's admin and cannot be deleted",
            hint="set DSTACK_SERVER_ADMIN_TOKEN to replace its token",
        )
    async with ctx.transaction() as session:
        result = await session.execute(delete(UserRow).where(UserRow.name == name))
    ctx.principals.clear()
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFoundError(f"user '{name}' not found", hint="see `dstack users list`")


def _user_row(
    name: str, token: str, is_admin: bool, repos: list[str] | None, ctx: ServerContext
) -> UserRow:
    return UserRow(
        name=name,
        token_hash=hash_token(token),
        is_admin=is_admin,
        repos=None if repos is None else sorted(set(repos)),
        created_at=ctx.clock(),
    )


def _to_model(row: UserRow) -> User:
    repos = None if row.repos is None else list(row.repos)
    return User(name=row.name, is_admin=row.is_admin, repos=repos, created_at=row.created_at)


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or not set(name) <= _NAME_CHARS:
        raise InvalidRequestError(
            f"invalid user name '{name}'",
            hint="use letters, digits and . _ - @ (at most 200 characters)",
        )


def _taken(name: str) -> ConflictError:
    return ConflictError(f"user '{name}' already exists", hint=f"dstack users delete {name}")


# --- runner tokens --------------------------------------------------------------------------
async def create_runner_token(
    ctx: ServerContext,
    *,
    created_by: str,
    label: str = "",
    replace: bool = False,
    token: str | None = None,
) -> str:
    """A new runner registration token (returned once; only its hash is kept).

    `replace` first revokes the earlier tokens of the same `label` (the local server makes
    one for its own runner on every start and needs only the newest). `token`: the one to
    record (the local server hands its runner one before its database is open), else a
    new one.
    """
    token = token or new_token()
    async with ctx.transaction() as session:
        if replace:
            await session.execute(delete(RunnerTokenRow).where(RunnerTokenRow.label == label))
        session.add(
            RunnerTokenRow(
                token_hash=hash_token(token),
                label=label,
                created_by=created_by,
                created_at=ctx.clock(),
            )
        )
    if replace:
        ctx.principals.clear()
    return token


# --- visibility -----------------------------------------------------------------------------
async def require_visible_run(ctx: ServerContext, principal: Principal, name: str) -> None:
    """`NotFoundError` — the same a missing run gets — when `principal` may not see run
    `name`; nothing when it may (or when it does not exist: the service says so)."""
    if principal.repos is None:
        return
    async with ctx.read() as session:
        repo_id = await session.scalar(select(RunRow.repo_id).where(RunRow.name == name))
    if repo_id is not None and not principal.can_see(repo_id):
        raise NotFoundError(f"run '{name}' not found", hint="see `dstack ps -a`")


def require_repo(principal: Principal, repo_id: str) -> None:
    """`NotFoundError` when `principal` may not submit or read runs of `repo_id`."""
    if not principal.can_see(repo_id):
        raise NotFoundError(
            f"repository '{repo_id}' is not one you have access to",
            hint="ask an admin to add it to your user (`dstack users add NAME --repo ...`)",
        )
