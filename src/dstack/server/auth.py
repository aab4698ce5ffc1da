"""The one place requests are authenticated.

For now a single token (from the settings) serves users and runners alike; per-user and
per-runner tokens will replace the comparison below, not the callers.
"""

from __future__ import annotations

import secrets

from fastapi import Request

from dstack.server.errors import Unauthorized


async def require_token(request: Request) -> None:
    """FastAPI dependency: a bare 401 unless `Authorization: Bearer <token>` matches."""
    expected: str = request.app.state.ctx.settings.token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), expected):
        raise Unauthorized()
