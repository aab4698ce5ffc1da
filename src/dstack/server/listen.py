"""The server's listening socket and its HTTP settings."""

from __future__ import annotations

import math
import socket
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
