"""Secrets: encrypted at rest (Fernet), listed by name only, handed to jobs when claimed.

Scope: one set per server, shared by every user and every repository. Every claimed job
gets all of them (as environment variables; `${{ secrets.NAME }}` in its commands and env
refers to them), which is what early dstack did; values are masked in logs by the runner.
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

from sqlalchemy import delete, select
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

SECRET_KEY_FILE = "secret_key"
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `${{ secrets.NAME }}`, as the configuration layer leaves it in commands and env values.
REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


_ALL_SECRETS = select(SecretRow.__table__.c.name, SecretRow.__table__.c.value)


def cipher(settings: ServerSettings) -> Fernet:
    """The server's cipher; creates `server_dir/secret_key` when no key is configured."""
    from cryptography.fernet import Fernet

    key = settings.secret_key or load_or_create_token(settings.server_dir / SECRET_KEY_FILE)
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


async def list_secrets(ctx: ServerContext) -> list[Secret]:
    async with ctx.transaction() as session:
        rows = (await session.scalars(select(SecretRow).order_by(SecretRow.name))).all()
    return [_to_model(row) for row in rows]


async def add_secret(ctx: ServerContext, *, name: str, value: str) -> Secret:
    """Store a new secret; `ConflictError` if the name exists."""
    _check_name(name)
    token = _encrypt(ctx, value)
    async with ctx.transaction() as session:
        if await session.get(SecretRow, name) is not None:
            raise ConflictError(
                f"secret '{name}' already exists", hint=f"dstack secrets update {name}"
            )
        now = ctx.clock()
        row = SecretRow(name=name, value=token, created_at=now, updated_at=now)
        session.add(row)
    return _to_model(row)


async def update_secret(ctx: ServerContext, *, name: str, value: str) -> Secret:
    """Replace the value of an existing secret; `NotFoundError` if there is none."""
    token = _encrypt(ctx, value)
    async with ctx.transaction() as session:
        row = await session.get(SecretRow, name)
        if row is None:
            raise _missing(name)
        row.value, row.updated_at = token, ctx.clock()
    return _to_model(row)


async def delete_secret(ctx: ServerContext, *, name: str) -> None:
    async with ctx.transaction() as session:
        result = await session.execute(delete(SecretRow).where(SecretRow.name == name))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise _missing(name)


async def secret_values(ctx: ServerContext) -> dict[str, str]:
    """Every secret's value (see `job_secrets`)."""
    async with ctx.transaction() as session:
        return await job_secrets(session, ctx.settings)


async def job_secrets(session: AsyncSession, settings: ServerSettings) -> dict[str, str]:
    """Every secret's value, for a job being claimed (in the claim's transaction). A value
    the current key cannot decrypt (the key changed) is left out and logged: jobs that
    refer to it fail with its name."""
    from cryptography.fernet import InvalidToken

    rows = (await session.execute(_ALL_SECRETS)).all()
    if not rows:
        return {}
    fernet = cipher(settings)
    values = {}
    for name, value in rows:
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


async def check_references(ctx: ServerContext, specs: Iterable[JobSpec]) -> None:
    """`InvalidRequestError` naming the first secret the specs refer to that does not exist."""
    wanted = references(specs)
    if not wanted:
        return
    async with ctx.transaction() as session:
        known = set((await session.scalars(select(SecretRow.name))).all())
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


def _missing(name: str) -> NotFoundError:
    return NotFoundError(f"secret '{name}' not found", hint="see `dstack secrets list`")


def _to_model(row: SecretRow) -> Secret:
    return Secret(name=row.name, created_at=row.created_at, updated_at=row.updated_at)
