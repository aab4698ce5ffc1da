"""Dependencies the routers share.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop on every request for a dictionary lookup.
"""

from __future__ import annotations

from fastapi import Request

from dstack.server.context import ServerContext


async def get_ctx(request: Request) -> ServerContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx
