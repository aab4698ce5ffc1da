"""The one place requests are authenticated and told apart: admin, user or runner.

Every endpoint but `/api/health` depends on one of the `require_*` dependencies below. A
missing or unknown token gets a bare 401 (it learns nothing); a valid token on the wrong kind
of endpoint gets 403 with a message: runner tokens are accepted only on runner endpoints,
user and admin tokens everywhere else, admin-only endpoints refuse plain users.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from dstack.server.errors import Forbidden, Unauthorized
from dstack.server.services.users import Principal, Role, authenticate

__all__ = [
    "Admin",
    "CurrentUser",
    "Principal",
    "Role",
    "announce_admin_token",
    "require_admin",
    "require_runner",
    "require_token",
    "require_user_or_runner",
]

_STATE_KEY = "dstack_principal"
_REFUSALS = {
    Role.RUNNER: "a runner token is accepted only on runner endpoints",
    Role.USER: "this endpoint needs an admin token",
    Role.ADMIN: "this endpoint is for runners; use a runner token (`dstack runners token`)",
}


async def principal_of(request: Request) -> Principal:
    """Who sent the request (looked up once per request); `Unauthorized` when nobody valid."""
    cached = getattr(request.state, _STATE_KEY, None)
    if isinstance(cached, Principal):
        return cached
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    principal = await authenticate(request.app.state.ctx, token)
    if principal is None:
        raise Unauthorized()
    setattr(request.state, _STATE_KEY, principal)
    return principal


def _allow(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await principal_of(request)
        if principal.role not in roles:
            raise Forbidden(_REFUSALS[principal.role])
        return principal

    return dependency


require_token = _allow(Role.ADMIN, Role.USER)
"""User endpoints: users and admins."""
require_admin = _allow(Role.ADMIN)
require_runner = _allow(Role.RUNNER)
require_user_or_runner = _allow(Role.ADMIN, Role.USER, Role.RUNNER)
"""Blobs: users (push, pull, cp) and runners (code, artifacts) both move them."""

CurrentUser = Annotated[Principal, Depends(require_token)]
Admin = Annotated[Principal, Depends(require_admin)]


def announce_admin_token(token: str, path: Path) -> None:
    """Print a freshly generated admin token, the only time it is shown."""
    print(
        f"dstack server: admin token {token}\n  (shown once; also in {path}, readable by you only)",
        file=sys.stdout,
        flush=True,
    )


async def require_visible_run(name: str, request: Request, user: CurrentUser) -> None:
    """Routes with a run `{name}`: a run of a repository the user may not see is answered
    404, exactly as if it did not exist."""
    from dstack.server.services.users import require_visible_run as check

    await check(request.app.state.ctx, user, name)


VisibleRun = [Depends(require_visible_run)]
