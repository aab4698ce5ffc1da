"""The one place requests are authenticated and told apart: admin, user or runner.

Every endpoint but `/api/health` depends on one of the `require_*` dependencies below. A
missing or unknown token gets a bare 401 (it learns nothing); a valid token on the wrong kind
of endpoint gets 403 with a message: runner tokens are accepted only on runner endpoints,
user and admin tokens everywhere else, admin-only endpoints refuse plain users.

Runners hold two kinds of token. A registration token (`dstack runners token`, or the
server's configured runner token) only registers: `POST /api/runners/register` answers it
with a new runner and that runner's own credential. Every other runner endpoint takes the
credential, and the runner is the one the credential belongs to, never an id the client sends.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from dstack.server.errors import Forbidden, Unauthorized
from dstack.server.services.users import Principal, Role, authenticate
from dstack.server.services.users import require_visible_run as check_visible_run

__all__ = [
    "REGISTRATION_ONLY",
    "Admin",
    "CurrentUser",
    "OwnRunnerId",
    "Principal",
    "Role",
    "RunnerId",
    "announce_admin_token",
    "require_admin",
    "require_own_runner",
    "require_registration",
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
REGISTRATION_ONLY = (
    "a registration token only registers a runner; "
    "use the runner's own credential, returned by POST /api/runners/register"
)


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


def _allow(*roles: Role, registration: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting `roles`; a runner's registration token only with
    `registration` (elsewhere a runner must present its own credential)."""

    async def dependency(request: Request) -> Principal:
        principal = await principal_of(request)
        check_role(principal, roles, registration=registration)
        return principal

    return dependency


def check_role(principal: Principal, roles: tuple[Role, ...], *, registration: bool) -> None:
    """`Forbidden` unless `principal` is of one of `roles` (a registration token counts as a
    runner only with `registration`)."""
    if principal.role not in roles:
        raise Forbidden(_REFUSALS[principal.role])
    if principal.role is Role.RUNNER and principal.runner_id is None and not registration:
        raise Forbidden(REGISTRATION_ONLY)


require_token = _allow(Role.ADMIN, Role.USER)
"""User endpoints: users and admins."""
require_admin = _allow(Role.ADMIN)
require_registration = _allow(Role.RUNNER, registration=True)
"""`POST /api/runners/register`: a registration token, or a restarted runner's credential."""
require_runner = _allow(Role.RUNNER)
"""Runner endpoints: a runner's own credential."""
require_user_or_runner = _allow(Role.ADMIN, Role.USER, Role.RUNNER)
"""Blobs: users (push, pull, cp) and runners (code, artifacts) both move them."""


async def current_runner_id(principal: Annotated[Principal, Depends(require_runner)]) -> str:
    """The runner the request's credential belongs to."""
    assert principal.runner_id is not None  # `require_runner` refused registration tokens
    return principal.runner_id


async def require_own_runner(runner_id: str, me: Annotated[str, Depends(current_runner_id)]) -> str:
    """Routes with a `{runner_id}`: only that runner's own credential may use them."""
    if runner_id != me:
        raise Forbidden(f"this credential belongs to runner {me}, not to {runner_id}")
    return me


CurrentUser = Annotated[Principal, Depends(require_token)]
Admin = Annotated[Principal, Depends(require_admin)]
RunnerId = Annotated[str, Depends(current_runner_id)]
"""The id of the runner whose credential the request carries."""
OwnRunnerId = Annotated[str, Depends(require_own_runner)]
"""The path's `{runner_id}`, once it is known to be the credential's runner."""


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
    await check_visible_run(request.app.state.ctx, user, name)


VisibleRun = [Depends(require_visible_run)]
