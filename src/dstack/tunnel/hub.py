"""`TunnelHub`: the server's meeting point of users' tunnel connections and runners.

Each runner keeps one control WebSocket here. To reach a port, `open` asks the runner (over
that connection) to dial the port and to open a data WebSocket with a fresh connection id;
the data endpoint hands that WebSocket to the waiting `open` through `attach`. The hub lives
in one server process: with several processes behind a load balancer, the runner's control
connection and the user's connection must reach the same process (sticky routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dstack.tunnel.errors import TunnelError
from dstack.tunnel.wire import CLOSE_GOING_AWAY, OpenRequest, Refusal

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

log = logging.getLogger(__name__)
CLOSE_POLICY = 1008  # the runner may no longer use this connection (it was removed)


@dataclass
class RunnerStream:
    """A runner's data WebSocket for one connection. Its endpoint keeps it open until
    `release()` (the socket belongs to the endpoint's handler, which must not return)."""

    ws: WebSocket
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _Pending:
    runner_id: str
    future: asyncio.Future[RunnerStream]


class TunnelHub:
    """Control connections by runner id, and connections waiting for their data WebSocket.

    Lives in the server's event loop; not thread-safe (nothing here blocks).
    """

    def __init__(self, *, open_timeout: float = 15.0) -> None:
        self.open_timeout = open_timeout
        self._links: dict[str, WebSocket] = {}
        self._pending: dict[str, _Pending] = {}

    def is_connected(self, runner_id: str) -> bool:
        return runner_id in self._links

    async def serve_runner(self, runner_id: str, ws: WebSocket) -> None:
        """Keep runner `runner_id`'s accepted control WebSocket until it closes.

        A newer connection of the same runner replaces an older one (a runner that
        reconnected before the server noticed the old connection was dead). The caller has
        made sure the connection's credential is runner `runner_id`'s own: one runner can
        never replace another's connection.
        """
        previous = self._links.get(runner_id)
        self._links[runner_id] = ws
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous.close(CLOSE_GOING_AWAY, "replaced by a newer connection")
        try:
            await self._read_refusals(runner_id, ws)
        finally:
            if self._links.get(runner_id) is ws:
                del self._links[runner_id]
                self._fail_pending(runner_id, "the runner's tunnel connection was lost")

    async def disconnect(self, runner_id: str, reason: str = "the runner was removed") -> None:
        """Close runner `runner_id`'s control connection (its credential was revoked) and
        fail the connections waiting on it; nothing when it has none here."""
        link = self._links.pop(runner_id, None)
        if link is None:
            return
        self._fail_pending(runner_id, reason)
        with contextlib.suppress(Exception):
            await link.close(CLOSE_POLICY, reason)

    async def open(self, runner_id: str, *, job_id: str, port: int) -> RunnerStream:
        """A data stream to 127.0.0.1:`port` on runner `runner_id`, for job `job_id`.

        Raises `TunnelError` when the runner is not connected here, refuses (the port is
        not the job's, nothing listens), or does not answer within `open_timeout` seconds.
        """
        link = self._links.get(runner_id)
        if link is None:
            raise TunnelError(
                "the runner has no tunnel connection to this server",
                hint="the runner may be restarting or run an older dstack; try again shortly",
                status=503,
            )
        conn_id = secrets.token_urlsafe(18)
        future: asyncio.Future[RunnerStream] = asyncio.get_running_loop().create_future()
        self._pending[conn_id] = _Pending(runner_id, future)
        taken = False
        try:
            await self._send_open(link, OpenRequest(conn_id=conn_id, job_id=job_id, port=port))
            stream = await asyncio.wait_for(asyncio.shield(future), self.open_timeout)
            taken = True
            return stream
        except TimeoutError:
            raise TunnelError(
                f"the runner did not open the connection within {self.open_timeout:.0f}s",
                status=504,
            ) from None
        finally:
            del self._pending[conn_id]
            if not taken:
                _let_go(future)

    @staticmethod
    async def _send_open(link: WebSocket, request: OpenRequest) -> None:
        try:
            await link.send_text(request.model_dump_json())
        except Exception as exc:  # the control socket closed under us, however it says so
            raise TunnelError("the runner's tunnel connection was lost", status=503) from exc

    def attach(self, runner_id: str, conn_id: str, ws: WebSocket) -> RunnerStream | None:
        """Hand the runner's data WebSocket `conn_id` to the `open` waiting for it.

        None when no `open` of this runner waits for `conn_id` (it timed out, or the id is
        not this runner's): the caller refuses the WebSocket.
        """
        pending = self._pending.get(conn_id)
        if pending is None or pending.runner_id != runner_id or pending.future.done():
            return None
        stream = RunnerStream(ws)
        pending.future.set_result(stream)
        return stream

    async def _read_refusals(self, runner_id: str, ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if not text:
                continue
            try:
                refusal = Refusal.model_validate_json(text)
            except ValidationError:
                log.warning("runner %s sent an unknown tunnel message", runner_id)
                continue
            self._refuse(runner_id, refusal)

    def _refuse(self, runner_id: str, refusal: Refusal) -> None:
        pending = self._pending.get(refusal.conn_id)
        if pending is None or pending.runner_id != runner_id or pending.future.done():
            return
        pending.future.set_exception(TunnelError(refusal.message, status=502))

    def _fail_pending(self, runner_id: str, message: str) -> None:
        for pending in self._pending.values():
            if pending.runner_id == runner_id and not pending.future.done():
                pending.future.set_exception(TunnelError(message, status=503))


def _let_go(future: asyncio.Future[RunnerStream]) -> None:
    """An `open` that gave up (cancelled, timed out) releases a stream that came anyway."""
    if not future.done():
        future.cancel()
    elif not future.cancelled() and future.exception() is None:
        future.result().release()
