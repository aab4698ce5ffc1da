"""Browser sessions: an opaque id in an HttpOnly cookie, the session itself in the database.

A user signs in with their token (or with a one-time code `dstack ui` got for them); the
server keeps the sha256 of a fresh random session id, the user's name and the hash of the
token that signed in. The principal of a request is looked up again on every request, so
deleting the user or giving them a new token ends their sessions at once, on every server
process sharing the database. Each session has its own CSRF token (synchronizer pattern).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from dstack.server.context import ServerContext
from dstack.server.db.models import UiSessionRow, UserRow
from dstack.server.principals import Principal, Role

SESSION_TTL = timedelta(hours=12)
CODE_TTL = timedelta(seconds=60)
SESSION = "session"
CODE = "code"


@dataclass(frozen=True)
class UiSession:
    principal: Principal
    csrf: str
    id_hash: str


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(moment: datetime, like: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=like.tzinfo)


async def _user_of_token(ctx: ServerContext, token: str) -> UserRow | None:
    async with ctx.read() as session:
        row = await session.scalar(select(UserRow).where(UserRow.token_hash == _hash(token)))
    return row


async def _insert(ctx: ServerContext, kind: str, user: UserRow, ttl: timedelta) -> str:
    secret = secrets.token_urlsafe(32)
    now = ctx.clock()
    async with ctx.transaction() as session:
        await session.execute(delete(UiSessionRow).where(UiSessionRow.expires_at < now))
        session.add(
            UiSessionRow(
                id_hash=_hash(secret),
                kind=kind,
                user_name=user.name,
                token_hash=user.token_hash,
                csrf=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + ttl,
            )
        )
    return secret


async def sign_in(ctx: ServerContext, token: str) -> str | None:
    """A new session id for a user's token; None when the token is no user's (a runner's
    token signs nobody in)."""
    user = await _user_of_token(ctx, token.strip())
    if user is None:
        return None
    return await _insert(ctx, SESSION, user, SESSION_TTL)


async def create_code(ctx: ServerContext, principal: Principal) -> str:
    """A one-time sign-in code for the user `principal` (`POST /api/ui/codes`)."""
    async with ctx.read() as session:
        user = await session.get(UserRow, principal.name)
    if user is None:
        raise LookupError(principal.name)
    return await _insert(ctx, CODE, user, CODE_TTL)


async def redeem_code(ctx: ServerContext, code: str) -> str | None:
    """Exchange a sign-in code (once, before it expires) for a new session id."""
    now = ctx.clock()
    async with ctx.transaction() as session:
        row = await session.get(UiSessionRow, _hash(code))
        if row is None or row.kind != CODE:
            return None
        await session.delete(row)
        expired = _aware(row.expires_at, now) <= now
        user = await session.get(UserRow, row.user_name)
    if expired or user is None or not hmac.compare_digest(user.token_hash, row.token_hash):
        return None
    return await _insert(ctx, SESSION, user, SESSION_TTL)


async def lookup(ctx: ServerContext, session_id: str) -> UiSession | None:
    """The live session `session_id` names, with its user's principal; None when unknown,
    expired, signed out, or its user's token changed since."""
    if not session_id or len(session_id) > 200:
        return None
    id_hash = _hash(session_id)
    async with ctx.read() as session:
        row = await session.get(UiSessionRow, id_hash)
        if row is None or row.kind != SESSION:
            return None
        now = ctx.clock()
        if _aware(row.expires_at, now) <= now:
            return None
        user = await session.get(UserRow, row.user_name)
    if user is None or not hmac.compare_digest(user.token_hash, row.token_hash):
        return None
    repos = None if user.repos is None else frozenset(user.repos)
    principal = Principal(
        name=user.name, role=Role.ADMIN if user.is_admin else Role.USER, repos=repos
    )
    return UiSession(principal=principal, csrf=row.csrf, id_hash=id_hash)


async def sign_out(ctx: ServerContext, id_hash: str) -> None:
    async with ctx.transaction() as session:
        await session.execute(delete(UiSessionRow).where(UiSessionRow.id_hash == id_hash))


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
