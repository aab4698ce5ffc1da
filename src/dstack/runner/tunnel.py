"""`TunnelAgent`: the runner's side of app tunnels.

It keeps one control WebSocket to the server (reconnecting with backoff) and, for each
`open` request, dials the job's port on 127.0.0.1 and carries the bytes over a data
WebSocket of their own. The runner only ever dials out, so this works behind NAT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from dstack.tunnel.pipe import pipe
from dstack.tunnel.thread import LoopThread
from dstack.tunnel.wire import OpenRequest, Refusal, bearer, websocket_url

log = logging.getLogger(__name__)

PortCheck = Callable[[str, int], bool]
"""`allowed(job_id, host_port)`: whether `host_port` is a port of job `job_id` running here.
Called on the agent's thread; must be quick and thread-safe."""


class TunnelAgent:
    """Serves the server's tunnel requests for runner `runner_id` until `close()`.

    Only ports `allowed` approves are dialed: the server is trusted with the runner's jobs,
    not with every service that listens on this machine's loopback.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        runner_id: str,
        *,
        allowed: PortCheck,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        dial_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
    ) -> None:
        self._server_url = server_url
        self._ping_interval = ping_interval
        self._headers = bearer(token)
        self._runner_id = runner_id
        self._allowed = allowed
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._dial_timeout = dial_timeout
        self._thread = LoopThread(name="tunnel-agent")
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected = threading.Event()

    def start(self) -> TunnelAgent:
        """Connect in the background; returns at once."""
        self._thread.start()
        self._thread.submit(self._control_forever())
        return self

    def close(self) -> None:
        """Drop the control connection and every open tunnel connection; joins the thread."""
        self._thread.stop()

    def is_connected(self) -> bool:
        """Whether the control connection is up right now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for the control connection; False if it is not up."""
        return self._connected.wait(timeout)

    async def _control_forever(self) -> None:
        url = websocket_url(self._server_url, f"/api/runners/{self._runner_id}/tunnel")
        pause = self._backoff
        while True:
            try:
                async with connect(
                    url,
                    additional_headers=self._headers,
                    compression=None,
                    ping_interval=self._ping_interval,
                ) as ws:
                    self._connected.set()
                    pause = self._backoff
                    await self._serve_control(ws)
            except InvalidStatus as exc:
                log.warning("the server refused the tunnel connection (HTTP %s)", _status(exc))
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                log.info("tunnel connection to the server: %s; reconnecting", exc or type(exc))
            finally:
                self._connected.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._backoff_max)

    async def _serve_control(self, control: ClientConnection) -> None:
        async for message in control:
            if not isinstance(message, str):
                continue
            try:
                request = OpenRequest.model_validate_json(message)
            except ValidationError:
                log.warning("unknown tunnel request from the server: %.200s", message)
                continue
            task = asyncio.create_task(self._serve(control, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, control: ClientConnection, request: OpenRequest) -> None:
        streams = await self._dial(request)
        if isinstance(streams, str):
            refusal = Refusal(conn_id=request.conn_id, message=streams)
            with contextlib.suppress(ConnectionClosed):
                await control.send(refusal.model_dump_json())
            return
        reader, writer = streams
        path = f"/api/runners/{self._runner_id}/tunnel/{request.conn_id}"
        url = websocket_url(self._server_url, path)
        try:
            ws = await connect(url, additional_headers=self._headers, compression=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.warning("opening a tunnel data connection failed: %s", exc)
            writer.close()
            return
        except asyncio.CancelledError:  # the agent is closing: `pipe` will not close it
            writer.close()
            raise
        await pipe(
            reader, writer, ws, peer="the app", shutdown_reason="the runner is shutting down"
        )

    async def _dial(
        self, request: OpenRequest
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        """The app's socket, or why there is none (one line for the user)."""
        if not self._allowed(request.job_id, request.port):
            return f"port {request.port} is not a port of a job this runner runs"
        try:
            # Not `wait_for`: on Python 3.11 a cancel racing the connect loses the socket.
            async with asyncio.timeout(self._dial_timeout):
                return await asyncio.open_connection("127.0.0.1", request.port)
        except ConnectionRefusedError:
            return "the app is not answering (connection refused on the runner)"
        except TimeoutError:
            return f"the app is not answering (no answer within {self._dial_timeout:.0f}s)"
        except OSError as exc:
            return f"cannot connect to the app on the runner ({exc.strerror or exc})"


def _status(exc: InvalidStatus) -> int:
    return exc.response.status_code
