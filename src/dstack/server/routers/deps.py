"""Dependencies the routers share.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop on every request for a dictionary lookup.
"""

from __future__ import annotations

from fastapi import Request

from dstack.server.context import ServerContext

RUNNER_HEADER = "x-dstack-runner-id"


async def get_ctx(request: Request) -> ServerContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx


async def runner_id_header(request: Request) -> str | None:
    """The id a runner sends with its job reports; when present, ownership is checked."""
    return request.headers.get(RUNNER_HEADER)
