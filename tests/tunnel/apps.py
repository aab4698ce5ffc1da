"""The far ends a tunnel test forwards to: a TCP echo server and a small FastAPI app."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class EchoServer:
    """Echoes every byte back on 127.0.0.1 (or `host`); `reset_all()` breaks off every
    open connection with a TCP reset, as a crashing app would."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.create_server((host, 0))
        self.port: int = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._resetting = threading.Event()
        self.accepted = 0
        """Connections accepted so far."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> EchoServer:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            if not self._resetting.is_set():
                conn.shutdown(socket.SHUT_WR)  # a half-close is answered with one
        except OSError:
            pass
        finally:
            conn.close()  # after `reset_all`: with SO_LINGER 0, a reset

    def reset_all(self) -> None:
        """Abort every open connection with a TCP reset (RST)."""
        self._resetting.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):  # closed already
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)  # wakes the echoing thread, which closes it

    def stop(self) -> None:
        self._sock.close()
        self.reset_all()


def web_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello(name: str = "world") -> dict[str, str]:
        return {"hello": name}

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("echo: " + await ws.receive_text())
        except WebSocketDisconnect:
            pass

    return app


@contextmanager
def serve_asgi(app: object, host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """Serve `app` with uvicorn on a thread; yields the port."""
    import uvicorn

    sock = socket.create_server((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
