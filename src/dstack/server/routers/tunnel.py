"""App tunnels over WebSockets (docs/api.md, "App tunnels").

Refusals happen before the WebSocket is accepted, as ordinary HTTP answers with the API's
error body (401 bare), so a client tells "not allowed" from "not reachable" by the status.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse, Response

from dstack.server.auth import REGISTRATION_ONLY
from dstack.server.context import ServerContext
from dstack.server.errors import error_body
from dstack.server.principals import Principal, Role
from dstack.server.services.tunnel import find_port, runner_exists
from dstack.server.services.users import authenticate
from dstack.tunnel.errors import TunnelError
from dstack.tunnel.relay import relay

router = APIRouter()


@router.websocket("/api/runners/{runner_id}/tunnel")
async def runner_control(ws: WebSocket, runner_id: str) -> None:
    """The runner's control connection: `open` requests down, refusals up. Only runner
    `runner_id`'s own credential opens it, so no runner can replace another's."""
    ctx = _ctx(ws)
    if not await _admit_runner(ws, ctx, runner_id):
        return
    if not await runner_exists(ctx, runner_id):
        await _refuse(ws, TunnelError(f"runner {runner_id} is not registered", status=404))
        return
    await ws.accept()
    await ctx.tunnels.serve_runner(runner_id, ws)


@router.websocket("/api/runners/{runner_id}/tunnel/{conn_id}")
async def runner_data(ws: WebSocket, runner_id: str, conn_id: str) -> None:
    """One connection's bytes from the runner; held open until its relay ends."""
    ctx = _ctx(ws)
    if not await _admit_runner(ws, ctx, runner_id):
        return
    await ws.accept()
    stream = ctx.tunnels.attach(runner_id, conn_id, ws)
    if stream is None:  # accepted first: a refusal would reach a runner as a bare status
        await ws.close(1008, "no connection is waiting for this id")
        return
    await stream.released.wait()


@router.websocket("/api/runs/{run_name}/jobs/{job_index}/ports/{port_index}")
async def forward_port(ws: WebSocket, run_name: str, job_index: int, port_index: int) -> None:
    """A user's connection to a job's port: the bytes of one TCP connection."""
    ctx = _ctx(ws)
    principal = await _admit(ws, ctx, Role.USER, Role.ADMIN)
    if principal is None:
        return
    try:
        target = await find_port(
            ctx, principal, run_name=run_name, job_index=job_index, port_index=port_index
        )
    except TunnelError as exc:
        await _refuse(ws, exc)
        return
    try:
        stream = await ctx.tunnels.open(target.runner_id, job_id=target.job_id, port=target.port)
    except TunnelError as exc:
        message = f"{target.label}: {exc.message}"
        await _refuse(ws, TunnelError(message, exc.hint, status=exc.status))
        return
    try:
        await ws.accept()
        await relay(ws, stream.ws, label=target.label)
    finally:
        stream.release()


def _ctx(ws: WebSocket) -> ServerContext:
    ctx = ws.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx


async def _admit(ws: WebSocket, ctx: ServerContext, *roles: Role) -> Principal | None:
    """The caller, if its bearer token is valid and of one of `roles`; else refused."""
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    token = token.strip()
    principal = None
    if scheme.lower() == "bearer" and token:
        principal = await authenticate(ctx, token)
    if principal is None:
        await ws.send_denial_response(Response(status_code=401))
        return None
    if principal.role not in roles:
        kind = "runner" if Role.RUNNER in roles else "user"
        message = f"this endpoint needs a {kind} token"
        await ws.send_denial_response(JSONResponse(error_body("forbidden", message, None), 403))
        return None
    return principal


async def _admit_runner(ws: WebSocket, ctx: ServerContext, runner_id: str) -> bool:
    """Whether the caller is runner `runner_id` itself (its own credential, not a
    registration token, not another runner's); refused with 403 otherwise."""
    principal = await _admit(ws, ctx, Role.RUNNER)
    if principal is None:
        return False
    if principal.runner_id == runner_id:
        return True
    message = REGISTRATION_ONLY
    if principal.runner_id is not None:
        message = f"this credential belongs to runner {principal.runner_id}, not to {runner_id}"
    await ws.send_denial_response(JSONResponse(error_body("forbidden", message, None), 403))
    return False


async def _refuse(ws: WebSocket, exc: TunnelError) -> None:
    code = {401: "unauthorized", 404: "not_found", 409: "conflict"}.get(exc.status, "tunnel")
    body = error_body(code, exc.message, exc.hint)
    await ws.send_denial_response(JSONResponse(body, status_code=exc.status))
