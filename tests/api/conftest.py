"""A real server on a loopback port, in a thread, for the synchronous clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from dstack.server.app import create_app
from dstack.server.settings import ServerSettings


@dataclass
class LiveServer:
    url: str
    token: str
    settings: ServerSettings
    runner_token: str = "test-runner-token"


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    settings = ServerSettings(
        home=tmp_path / "home",
        token="test-token",
        port=sock.getsockname()[1],
        runner_token="test-runner-token",
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "test server did not start"
    try:
        yield LiveServer(settings.url, settings.token, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
