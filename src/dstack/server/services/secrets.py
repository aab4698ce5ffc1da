"""Secrets: encrypted at rest (Fernet), listed by name only, handed to jobs when claimed.

Scope: a secret belongs to one repository, or is global (added by an admin). A claimed job
gets its repository's secrets and the global ones, a repository's winning over a global one
of the same name (as environment variables; `${{ secrets.NAME }}` in its commands and env
refers to them); values are masked in logs by the runner. Who may manage which scope is
decided in `services/scope.py`.
The key comes from `settings.secret_key` or, when unset, from `server_dir/secret_key`
(generated once, mode 0600). Any string works as a key: it is stretched with sha256.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.errors import ConflictError, NotFoundError
from dstack.models.job import JobSpec
from dstack.models.protocol import Secret
from dstack.server.context import ServerContext
from dstack.server.db.models import SecretRow
from dstack.server.errors import InvalidRequestError
from dstack.server.settings import ServerSettings
from dstack.server.tokens import load_or_create_token

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `${{ secrets.NAME }}`, as the configuration layer leaves it in commands and env values.
REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


GLOBAL = ""
"""`SecretRow.repo_id` of a global secret."""
_COLUMNS = SecretRow.__table__.c
_SECRETS_OF = select(_COLUMNS.name, _COLUMNS.value, _COLUMNS.repo_id).where(
    _COLUMNS.repo_id.in_(bindparam("scopes", expanding=True))
)


def cipher(settings: ServerSettings) -> Fernet:
    """The server's cipher; creates `server_dir/secret_key` when no key is configured."""
    # cryptography: ~10 ms of a server's start that only secrets and credentials need
    from cryptography.fernet import Fernet

    key = settings.secret_key or load_or_create_token(settings.files.secret_key)
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


async def list_secrets(
    ctx: ServerContext, *, repo_id: str | None, with_global: bool = False
) -> list[Secret]:
    """The secrets of `repo_id` (None: the global ones), by name; with `with_global`, the
    global ones too, each listed with its scope."""
    scopes = _scopes(repo_id, with_global)
    async with ctx.transaction() as session:
        query = select(SecretRow).where(SecretRow.repo_id.in_(scopes))
        rows = (await session.scalars(query.order_by(SecretRow.name, SecretRow.repo_id))).all()
    return [_to_model(row) for row in rows]


async def add_secret(
    ctx: ServerContext, *, name: str, value: str, repo_id: str | None = None
) -> Secret:
    """Store a new secret of `repo_id` (None: global); `ConflictError` if the name exists
    there."""
    _check_name(name)
    token = _encrypt(ctx, value)
    key = (_scope(repo_id), name)
    async with ctx.transaction() as session:
        if await session.get(SecretRow, key) is not None:
            raise ConflictError(
                f"secret '{name}' already exists{_where(repo_id)}",
                hint=f"dstack secrets update {name}{_flag(repo_id)}",
            )
        now = ctx.clock()
        row = SecretRow(repo_id=key[0], name=name, value=token, created_at=now, updated_at=now)
        session.add(row)
    return _to_model(row)


async def update_secret(
    ctx: ServerContext, *, name: str, value: str, repo_id: str | None = None
) -> Secret:
    """Replace the value of an existing secret of `repo_id` (None: global);
    `NotFoundError` if there is none."""
    token = _encrypt(ctx, value)
    async with ctx.transaction() as session:
        row = await session.get(SecretRow, (_scope(repo_id), name))
        if row is None:
            raise _missing(name, repo_id)
        row.value, row.updated_at = token, ctx.clock()
    return _to_model(row)


async def delete_secret(ctx: ServerContext, *, name: str, repo_id: str | None = None) -> None:
    """Remove secret `name` of `repo_id` (None: global); `NotFoundError` if there is none."""
    async with ctx.transaction() as session:
        result = await session.execute(
            delete(SecretRow).where(SecretRow.repo_id == _scope(repo_id), SecretRow.name == name)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise _missing(name, repo_id)


async def secret_values(ctx: ServerContext, *, repo_id: str) -> dict[str, str]:
    """The values a job of `repo_id` gets (see `job_secrets`)."""
    async with ctx.transaction() as session:
        return await job_secrets(session, ctx.settings, repo_id=repo_id)


async def job_secrets(
    session: AsyncSession, settings: ServerSettings, *, repo_id: str
) -> dict[str, str]:
    """The values a job of `repo_id` gets, for a job being claimed (in the claim's
    transaction): the global secrets and the repository's own, which win over a global one
    of the same name. A value the current key cannot decrypt (the key changed) is left out
    and logged: jobs that refer to it fail with its name."""
    rows = (await session.execute(_SECRETS_OF, {"scopes": [GLOBAL, repo_id]})).all()
    if not rows:
        return {}
    from cryptography.fernet import InvalidToken  # see `cipher`

    fernet = cipher(settings)
    values = {}
    # Global first, so the repository's own value replaces it.
    for name, value, _ in sorted(rows, key=lambda r: r[2] != GLOBAL):
        try:
            values[name] = fernet.decrypt(value.encode()).decode()
        except InvalidToken:
            logger.error("secret '%s' cannot be decrypted: the secret key changed", name)
    return values


def references(specs: Iterable[JobSpec]) -> set[str]:
    """Names of the secrets `${{ secrets.NAME }}` in the specs' commands and env refer to."""
    found: set[str] = set()
    for spec in specs:
        for text in [*spec.commands, *spec.env.values()]:
            found.update(REFERENCE.findall(text))
    return found


async def check_references(ctx: ServerContext, specs: Iterable[JobSpec], *, repo_id: str) -> None:
    """`InvalidRequestError` naming the first secret the specs refer to that a job of
    `repo_id` would not get (neither the repository's nor a global one)."""
    wanted = references(specs)
    if not wanted:
        return
    async with ctx.transaction() as session:
        query = select(SecretRow.name).where(SecretRow.repo_id.in_([GLOBAL, repo_id]))
        known = set((await session.scalars(query)).all())
    missing = sorted(wanted - known)
    if missing:
        raise InvalidRequestError(
            f"the workflow refers to secret '{missing[0]}', which does not exist",
            hint=f"add it: dstack secrets add {missing[0]}",
        )


def _encrypt(ctx: ServerContext, value: str) -> str:
    return cipher(ctx.settings).encrypt(value.encode()).decode()


def _check_name(name: str) -> None:
    # Secrets become environment variables, so their names must be valid ones.
    if not NAME_PATTERN.fullmatch(name) or len(name) > 200:
        raise InvalidRequestError(
            f"invalid secret name '{name}'",
            hint="use letters, digits and underscores, not starting with a digit",
        )


def _scope(repo_id: str | None) -> str:
    if repo_id == GLOBAL:
        raise InvalidRequestError(
            "a secret's repository cannot be empty", hint="leave repo_id out for a global secret"
        )
    return GLOBAL if repo_id is None else repo_id


def _scopes(repo_id: str | None, with_global: bool) -> list[str]:
    scope = _scope(repo_id)
    return [GLOBAL, scope] if with_global else [scope]


def _where(repo_id: str | None) -> str:
    return " (global)" if repo_id is None else f" in {repo_id}"


def _flag(repo_id: str | None) -> str:
    return " --global" if repo_id is None else ""


def _missing(name: str, repo_id: str | None) -> NotFoundError:
    return NotFoundError(
        f"secret '{name}' not found{_where(repo_id)}",
        hint=f"see `dstack secrets list{_flag(repo_id)}`",
    )


def _to_model(row: SecretRow) -> Secret:
    return Secret(
        name=row.name,
        repo_id=row.repo_id or None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
