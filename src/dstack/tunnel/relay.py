"""`relay`: the server's half of a tunnel connection, two WebSockets spliced together."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from dstack.tunnel.wire import CLOSE_ERROR, CLOSE_NORMAL, Notice, close_reason

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

_LOST = 1006  # no close frame: the peer's process or network went away


async def relay(client: WebSocket, runner: WebSocket, *, label: str) -> None:
    """Copy binary frames both ways until one side closes, then close the other.

    The client is told why when the runner's side ended abnormally: a `Notice` prefixed
    with `label` ("port 8888 of run clever-fox-1 job 0"), then a close with code 1011.
    """
    up = asyncio.create_task(_forward(client, runner))
    down = asyncio.create_task(_forward(runner, client))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done:
            await _close(runner, CLOSE_NORMAL, "")
        else:
            await _end_client(client, down.result(), label)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _forward(source: WebSocket, target: WebSocket) -> tuple[int, str]:
    """Binary frames from `source` to `target`; returns `source`'s close code and reason.

    If `target` fails first this waits: the other direction sees `target` close.
    """
    while True:
        message = await source.receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or _LOST), str(message.get("reason") or "")
        data = message.get("bytes")
        if data is None:
            continue  # text frames are not part of the byte stream
        try:
            await target.send_bytes(data)
        except Exception:  # the target is gone; its own receive loop reports it
            await asyncio.Event().wait()


async def _end_client(client: WebSocket, closed: tuple[int, str], label: str) -> None:
    code, reason = closed
    if code == CLOSE_NORMAL:
        await _close(client, CLOSE_NORMAL, "")
        return
    if code == _LOST or not reason:
        reason = "the runner went away (its connection was lost)"
    message = f"{label}: {reason}"
    with contextlib.suppress(Exception):
        await client.send_text(Notice(message=message).model_dump_json())
    await _close(client, CLOSE_ERROR, close_reason(message))


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed, by either side
        await ws.close(code, reason)
