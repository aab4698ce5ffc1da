"""One TCP connection spliced to one WebSocket (the `websockets` asyncio client API).

Used at both ends of a tunnel: by the runner's agent (the app's socket) and by the user's
`PortForwards` (the local client's socket). The server in the middle only relays frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from pydantic import ValidationError
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from dstack.tunnel.wire import CHUNK, CLOSE_ERROR, CLOSE_NORMAL, EOF, Notice, close_reason


@dataclass(frozen=True)
class PipeResult:
    """How a spliced connection ended: both None when both sides finished normally.

    `local_error`: the TCP socket failed (reset, ...). `remote_error`: the WebSocket was
    closed abnormally; the far end's notice or close reason, for the user.
    """

    local_error: str | None = None
    remote_error: str | None = None


class _WebSocketClosed:
    """`_tcp_to_ws` could not send because the WebSocket is gone; `_ws_to_tcp` says why."""


_WS_CLOSED = _WebSocketClosed()


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ws: Connection,
    *,
    peer: str,
    shutdown_reason: str = "the connection was shut down",
) -> PipeResult:
    """Copy bytes both ways until the connection is over, then close both sides.

    `peer` names the TCP side in messages ("the app", "the local client"); when the pipe
    is cancelled, the far end is told `shutdown_reason`.
    It is over when the WebSocket closes, when the TCP socket fails, or when both
    directions reached their end of stream (then this side closes the WebSocket normally).
    Never raises for a peer going away; cancelling it closes both sides.
    """
    eof_received = asyncio.Event()
    to_ws = asyncio.create_task(_tcp_to_ws(reader, ws, eof_received, peer))
    to_tcp = asyncio.create_task(_ws_to_tcp(ws, writer, eof_received))
    result = PipeResult()
    try:
        done, _ = await asyncio.wait({to_ws, to_tcp}, return_when=asyncio.FIRST_COMPLETED)
        if to_tcp in done:
            result = PipeResult(remote_error=to_tcp.result())
        else:
            outcome = to_ws.result()
            if isinstance(outcome, _WebSocketClosed):
                result = PipeResult(remote_error=await to_tcp)
            else:
                result = PipeResult(local_error=outcome)
    except asyncio.CancelledError:
        result = PipeResult(local_error=shutdown_reason)
        raise
    finally:
        for task in (to_ws, to_tcp):
            task.cancel()
        # Closed before anything is awaited: a second cancel must not leak the socket.
        writer.close()
        await asyncio.gather(to_ws, to_tcp, return_exceptions=True)
        await _close_ws(ws, result.local_error)
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return result


async def _tcp_to_ws(
    reader: asyncio.StreamReader, ws: Connection, eof_received: asyncio.Event, peer: str
) -> str | _WebSocketClosed | None:
    """Returns None once both directions ended, an error line if the socket failed."""
    try:
        while data := await reader.read(CHUNK):
            await ws.send(data)
        await ws.send(EOF)
    except ConnectionClosed:
        return _WS_CLOSED
    except OSError as exc:
        return f"{peer} broke off the connection ({exc.strerror or exc})"
    await eof_received.wait()
    return None


async def _ws_to_tcp(
    ws: Connection, writer: asyncio.StreamWriter, eof_received: asyncio.Event
) -> str | None:
    """Returns when the WebSocket closed: None if normally, else why (for the user)."""
    notice: str | None = None
    try:
        async for message in ws:
            if isinstance(message, str):
                notice = _notice(message) or notice
            elif message == EOF:
                _write_eof(writer)
                eof_received.set()
            elif not eof_received.is_set():
                writer.write(message)
                await writer.drain()
    except ConnectionClosed as exc:  # an abnormal close (a normal one ends the loop)
        return notice or _closed_reason(exc)
    except OSError:
        pass  # the local socket is gone; the WebSocket is closed by `pipe`
    return notice


def _notice(text: str) -> str | None:
    try:
        return Notice.model_validate_json(text).message
    except ValidationError:
        return None


def _write_eof(writer: asyncio.StreamWriter) -> None:
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


def _closed_reason(exc: ConnectionClosed) -> str:
    received = exc.rcvd
    if received is None:
        return "the connection to the server was lost"
    return received.reason or f"the connection was closed (code {received.code})"


async def _close_ws(ws: Connection, error: str | None) -> None:
    code, reason = (CLOSE_NORMAL, "") if error is None else (CLOSE_ERROR, close_reason(error))
    with contextlib.suppress(ConnectionClosed, OSError):
        await ws.close(code, reason)
