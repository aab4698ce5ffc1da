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

from dstack.api import RunnerClient
from dstack.models.protocol import RegisterRunnerRequest
from dstack.models.resources import HostResources
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
        assert settings.token is not None
        yield LiveServer(settings.url, settings.token, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def registered_runner(server: LiveServer, name: str = "fake") -> RunnerClient:
    """A runner registered with the server's registration token, speaking with the credential
    the registration returned (a registration token only registers)."""
    request = RegisterRunnerRequest(
        name=name,
        host="localhost",
        resources=HostResources(cpus=2, memory_mib=4096, disk_mib=10_000),
        executors=["process"],
    )
    with RunnerClient(server.url, server.runner_token) as registrar:
        answer = registrar.register(request)
    assert answer.runner_token is not None
    runner = RunnerClient(server.url, answer.runner_token)
    runner.runner_id = answer.runner_id
    return runner
