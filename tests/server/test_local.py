"""`ensure_local_server` starts one detached server per home and reuses it."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dstack.api import Client
from dstack.server.local import ensure_local_server, read_local_server, stop_local_server


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "dstack-home"
    try:
        yield home
    finally:
        stop_local_server(home)


def test_racing_callers_start_one_server_and_reuse_it(home: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ensure_local_server, home, start_runner=False) for _ in range(2)]
        first, second = (f.result(timeout=60) for f in futures)

    assert first == second
    url, token = first
    assert url.startswith("http://127.0.0.1:")
    token_file = home / "server" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    with Client(url, token) as client:
        assert client.list_runs() == []
    info = read_local_server(home)
    assert info is not None
    assert info.url == url

    assert ensure_local_server(home, start_runner=False) == first
    assert stop_local_server(home)
    assert read_local_server(home) is None

    _restarted_url, restarted_token = ensure_local_server(home, start_runner=False)
    assert restarted_token == token  # the token is generated once
    assert read_local_server(home) is not None
