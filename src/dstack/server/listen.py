"""The server's listening socket and its HTTP settings."""

from __future__ import annotations

import asyncio
import math
import socket
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from dstack.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI


def tcp_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn; `port` 0 picks a free one.

    Created with `IPPROTO_TCP` rather than the default protocol 0: asyncio turns Nagle's
    algorithm off (TCP_NODELAY) only on accepted sockets whose protocol says TCP, and with
    Nagle on every small answer on a kept-alive connection waited ~40 ms for the client's
    delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="pick another --port, or stop what uses this one",
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_config(
    app: FastAPI, *, access_log: bool, keep_alive: float, **options: Any
) -> uvicorn.Config:
    """uvicorn's settings for a dstack server (`dstack server`, the local server);
    `keep_alive`: seconds an idle connection stays open (`ServerSettings.keep_alive_seconds`)."""
    return uvicorn.Config(
        app,
        log_level="info",
        access_log=access_log,
        timeout_keep_alive=max(1, math.ceil(keep_alive)),
        **options,
    )


class DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the dstack app it serves (`dstack_app`, however wrapped
    in `config`) that it is about to exit (SIGTERM, SIGINT, `stop()`), before it waits for
    the requests in flight: `ServerContext.drain` answers the long-polls at once (a
    runner's claim waits up to a minute), so the graceful shutdown neither waits for them
    nor cancels them with a traceback in the log."""

    def __init__(self, config: uvicorn.Config, dstack_app: FastAPI) -> None:
        super().__init__(config)
        self._dstack_app = dstack_app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)  # a signal handler, between two steps of the loop
        self._exiting()

    def stop(self) -> None:
        """Exit gracefully, as on SIGTERM (from the server's own loop)."""
        self.should_exit = True
        self._exiting()

    def _exiting(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        ctx = getattr(self._dstack_app.state, "ctx", None)  # None before the lifespan's start
        if ctx is not None:
            ctx.drain()


class QuietServer(DrainingServer):
    """A draining server that sleeps until it is asked to exit (a signal, `stop()`), where
    uvicorn's own wakes ten times a second to look: CPU an idle server spends forever. The
    ticks also keep the `Date` header current, so configure it with `date_header=False`."""

    def __init__(self, config: uvicorn.Config, dstack_app: FastAPI) -> None:
        super().__init__(config, dstack_app)
        self._exit: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._exit = asyncio.Event()
        if not await self.on_tick(0):
            await self._exit.wait()

    def _exiting(self) -> None:
        super()._exiting()
        if self._loop is not None and self._exit is not None:
            self._loop.call_soon_threadsafe(self._exit.set)
