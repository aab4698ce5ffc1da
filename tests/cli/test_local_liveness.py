"""The CLI finds the local server from `server.json`: a live process whose port accepts."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstack.server.local import ensure_local_server, read_local_server, stop_local_server


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "dstack-home"
    (home / "server").mkdir(parents=True)
    (home / "server" / "token").write_text("recorded-token\n")
    try:
        yield home
    finally:
        info = read_local_server(home)
        if info is not None and info.pid != os.getpid():
            stop_local_server(home)


def _record(home: Path, url: str, pid: int) -> None:
    (home / "server" / "server.json").write_text(json.dumps({"url": url, "pid": pid}))


def test_a_recorded_server_that_accepts_connections_is_reused(home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        _record(home, url, os.getpid())

        assert ensure_local_server(home, start_runner=False) == (url, "recorded-token")


def test_a_recorded_server_whose_port_is_closed_is_replaced(home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        dead_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    _record(home, dead_url, os.getpid())  # the process lives, its port does not accept

    url, token = ensure_local_server(home, start_runner=False)

    assert url != dead_url
    assert token == "recorded-token"
    info = read_local_server(home)
    assert info is not None
    assert info.url == url
    assert info.pid != os.getpid()
