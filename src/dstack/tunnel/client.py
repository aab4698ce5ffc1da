"""`PortForwards`: a job's ports as local ports, for the CLI (`dstack run`, `dstack attach`).

Each accepted local connection opens one WebSocket to the server's
`/api/runs/{run}/jobs/{job}/ports/{port}` and carries the bytes; see docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus

from dstack.errors import DstackError
from dstack.tunnel.pipe import pipe
from dstack.tunnel.thread import LoopThread
from dstack.tunnel.wire import bearer, websocket_url

log = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 30.0  # the server waits up to 15 s for the runner before it answers


@dataclass(frozen=True)
class ForwardTarget:
    """Port `port_index` (an index into the job's `ports`) of job `job_index` of the run."""

    job_index: int
    port_index: int


class PortForwards:
    """Local listeners on 127.0.0.1 forwarding to a run's job ports through the server.

    Runs its own event loop on a daemon thread. `on_event` gets one line for the user each
    time a connection cannot be opened or ends abnormally (the same line is not repeated
    until a connection to that target succeeds again); it is called on that thread and
    must not block. Connections are never left hanging: when the far end is gone, the
    local connection is closed.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        run_name: str,
        targets: list[ForwardTarget],
        *,
        on_event: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._base_url = base_url
        self._headers = bearer(token)
        self._run_name = run_name
        self._targets = list(dict.fromkeys(targets))
        self._on_event = on_event
        self._thread = LoopThread(name=f"ports-{run_name}")
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._last_event: dict[ForwardTarget, str] = {}
        self._started = False
        self._closed = False

    def start(self) -> dict[ForwardTarget, int]:
        """Bind 127.0.0.1:<free port> per target and start serving; returns the ports.

        Raises `DstackError` when a port cannot be bound (or `start` was called before).
        """
        if self._started:
            raise DstackError("port forwarding was started already")
        self._started = True
        self._thread.start()
        try:
            return self._thread.call(self._listen_all(), timeout=30)
        except OSError as exc:
            self.close()
            raise DstackError(f"cannot listen on a local port: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Close the listeners and every open connection; the local ports are free after.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            with contextlib.suppress(TimeoutError):
                self._thread.call(self._shutdown(), timeout=10)
        self._thread.stop()

    async def _listen_all(self) -> dict[ForwardTarget, int]:
        ports: dict[ForwardTarget, int] = {}
        for target in self._targets:
            serve = functools.partial(self._serve, target)
            server = await asyncio.start_server(serve, host="127.0.0.1", port=0)
            self._servers.append(server)
            ports[target] = int(server.sockets[0].getsockname()[1])
        return ports

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _serve(
        self, target: ForwardTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._forward(target, reader, writer)
        except asyncio.CancelledError:
            # `close()` cancels it. Ending normally rather than cancelled: Python 3.11's
            # stream server logs an error for every cancelled connection handler.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(
        self, target: ForwardTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = f"/api/runs/{self._run_name}/jobs/{target.job_index}/ports/{target.port_index}"
        url = websocket_url(self._base_url, path)
        try:
            ws = await connect(
                url,
                additional_headers=self._headers,
                compression=None,
                open_timeout=_HANDSHAKE_TIMEOUT,
            )
        except InvalidStatus as exc:
            self._event(target, self._refusal(target, exc))
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            where = self._label(target)
            self._event(target, f"{where}: cannot reach the server at {self._base_url} ({exc})")
            return
        result = await pipe(reader, writer, ws, peer="the local client")
        if result.remote_error:
            self._event(target, result.remote_error)
        else:
            self._last_event.pop(target, None)

    def _label(self, target: ForwardTarget) -> str:
        return f"run {self._run_name} job {target.job_index} port #{target.port_index}"

    def _refusal(self, target: ForwardTarget, exc: InvalidStatus) -> str:
        status = exc.response.status_code
        if status == 401:
            return f"{self._label(target)}: the server did not accept the token (HTTP 401)"
        message, hint = _error_text(exc.response.body, exc.response.headers)
        text = message or f"{self._label(target)}: the server refused the connection"
        return f"{text} — {hint}" if hint else text

    def _event(self, target: ForwardTarget, message: str) -> None:
        if self._last_event.get(target) == message:
            return
        self._last_event[target] = message
        try:
            self._on_event(message)
        except Exception:  # a broken callback must not take the forwarding down
            log.exception("the port forwarding event handler failed")


def _error_text(body: bytes | bytearray | None, headers: Headers) -> tuple[str | None, str | None]:
    """(message, hint) of the API's error body; (None, None) when it is not one."""
    if not body or "json" not in headers.get("content-type", ""):
        return None, None
    try:
        error = json.loads(body)["error"]
        return str(error["message"]), error.get("hint")
    except (ValueError, KeyError, TypeError):
        return None, None
