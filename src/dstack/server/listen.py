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


class QuietServer(uvicorn.Server):
    """A uvicorn server that sleeps until it is asked to exit (a signal, `stop()`), where
    uvicorn's own wakes ten times a second to look: CPU an idle server spends forever. The
    ticks also keep the `Date` header current, so configure it with `date_header=False`."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        if not await self.on_tick(0):
            await self._exit.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)  # a signal handler, between two steps of the loop
        self._wake()

    def stop(self) -> None:
        """Exit gracefully, as on SIGTERM (from the server's own loop)."""
        self.should_exit = True
        self._wake()

    def _wake(self) -> None:
        if self._loop is not None and self._exit is not None:
            self._loop.call_soon_threadsafe(self._exit.set)
