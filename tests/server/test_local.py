"""`ensure_local_server` starts one detached server per home and reuses it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from dstack.api import Client
from dstack.errors import ServerError
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


def test_an_idle_local_server_exits_with_its_runner_and_the_next_command_starts_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSTACK_LOCAL_SERVER_IDLE_TIMEOUT", "2")  # the server inherits it
    url, token = ensure_local_server(home, executor="process")
    info = read_local_server(home)
    assert info is not None
    server = psutil.Process(info.pid)
    runner = _child(server)
    with Client(url, token) as client:
        assert client.list_runs() == []  # a request: the idle time counts from here

    _gone, alive = psutil.wait_procs([server, runner], timeout=120)

    assert not alive
    log = (home / "server" / "server.log").read_text()
    assert "no job and no request for 2 s: the local server exits" in log
    assert read_local_server(home) is None
    assert ensure_local_server(home, start_runner=False)[1] == token
    restarted = read_local_server(home)
    assert restarted is not None
    assert restarted.pid != info.pid


def _child(process: psutil.Process) -> psutil.Process:
    for _ in range(600):
        children = process.children()
        if children:
            return children[0]
        time.sleep(0.05)
    raise AssertionError("the local server started no runner")


def test_a_detached_server_prints_its_pid_then_its_url_once_it_listens(home: Path) -> None:
    log = home / "server.log"
    home.mkdir()
    command = [sys.executable, "-m", "dstack.server.local_main", "--home", str(home)]
    started = subprocess.run(
        [*command, "--detach", str(log), "--no-runner"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    pid, url = started.stdout.splitlines()
    recorded = json.loads((home / "server" / "server.json").read_text())
    assert (recorded["pid"], recorded["url"]) == (int(pid), url)
    token = (home / "server" / "token").read_text().strip()
    with Client(url, token) as client:
        assert client.list_runs() == []
    assert f"listening at {url}" in log.read_text()


def test_a_server_that_fails_at_start_is_reported_with_its_log(home: Path) -> None:
    (home / "server" / "db.sqlite").mkdir(parents=True)  # no database can be opened there

    with pytest.raises(ServerError) as failed:
        ensure_local_server(home, start_runner=False)

    assert failed.value.message.startswith(
        "the local server exited at start: cannot open the database "
    ), failed.value.message
    assert "unable to open database file" in failed.value.message
    assert failed.value.hint == f"see {home / 'server' / 'server.log'}"
    assert read_local_server(home) is None
