"""`dstack server status | stop`: the local background server, through the real CLI; and
`dstack server --host --port` still runs a server in the foreground."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import free_port, wait_until

from dstack.pidlock import lock_holder


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, "process")
    try:
        yield e
    finally:
        _stop_server(e.home)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def _status(env: Env) -> dict[str, Any]:
    result = env.dstack("server", "status", "--json")
    assert result.code == 0, result
    data: dict[str, Any] = json.loads(result.out)
    return data


def test_status_and_stop_when_nothing_runs_start_nothing(env: Env) -> None:
    status = env.dstack("server", "status")
    stop = env.dstack("server", "stop")

    assert (status.code, stop.code) == (0, 0), (status, stop)
    assert "No local server is running" in status.out
    assert stop.out.strip() == "No local server is running."
    assert _status(env) == {"running": False, "runner": None}
    assert not (env.home / "server" / "server.json").exists()


def test_status_shows_the_running_server_and_stop_ends_it_and_its_runner(env: Env) -> None:
    assert env.dstack("ps").code == 0  # starts the local server in the background
    wait_until(lambda: (_status(env)["runner"] or {}).get("status") == "ready", 30, "runner")

    data = _status(env)
    text = env.dstack("server", "status")

    assert data["running"] is True
    assert data["executor"] == "process"
    assert str(data["url"]).startswith("http://127.0.0.1:")
    assert httpx.get(f"{data['url']}/api/health").status_code == 200
    assert isinstance(data["uptime_seconds"], int)
    assert data["version"]
    runner = data["runner"]
    assert isinstance(runner, dict)
    assert runner["executors"] == ["process"]
    server_pid, runner_pid = int(str(data["pid"])), int(runner["pid"])
    assert f"running at {data['url']} (pid {server_pid})" in text.out
    assert "executor: process" in text.out
    assert f"runner:   ready (pid {runner_pid}" in text.out

    stopped = env.dstack("server", "stop")

    assert stopped.code == 0, stopped
    assert stopped.out.strip() == f"Stopped the local server (pid {server_pid}, {data['url']})."
    assert not _alive(server_pid)
    assert not _alive(runner_pid)
    assert _status(env) == {"running": False, "runner": None}
    assert env.dstack("server", "stop").out.strip() == "No local server is running."
    # the runner's claim was waiting: it was answered, not cancelled at the shutdown's bound
    log = (env.home / "server" / "server.log").read_text()
    assert "Traceback" not in log, log
    assert "Finished server process" in log, log


def _servers_of(home: Path) -> list[int]:
    import psutil  # only this test looks at other processes

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = proc.info["cmdline"] or []
        if "dstack.server.local_main" in line and str(home) in line:
            found.append(proc.info["pid"])
    return found


def test_a_run_refused_before_it_needed_the_server_leaves_one_server_for_the_next(
    env: Env,
) -> None:
    # `dstack run` starts the local server while it reads the workflows; a run refused
    # meanwhile (an argument the workflow does not take) still sees that start through,
    # or the next command would find no server yet and start a second one on the same home.
    env.workflows("workflows:\n  - name: train\n    provider: bash\n    commands: [echo hi]\n")
    env.commit()

    refused = env.dstack("run", "train", "--epochs", "3")
    ran = env.dstack("run", "train")

    assert refused.code == 1, refused
    assert "unknown variable --epochs" in refused.err
    assert ran.code == 0, ran
    assert "hi" in ran.out
    assert len(_servers_of(env.home)) == 1


def test_a_mistyped_workflow_name_starts_no_local_server(env: Env) -> None:
    env.workflows(
        "workflows:\n  - name: train\n    provider: bash\n    commands: [echo hi]\n"
        "  - name: trian-big\n    provider: bash\n    commands: [echo big]\n"
    )
    env.commit()

    refused = env.dstack("run", "trian")

    assert refused.code == 1, refused
    assert "did you mean 'train'?" in refused.err
    assert _servers_of(env.home) == []
    assert not (env.home / "server").exists()


@contextlib.contextmanager
def _held_while_starting(env: Env) -> Iterator[int]:
    """The pid of a local server that `dstack ps` started, held still (SIGSTOP) once it has
    taken the home and before it listens; the command that started it is killed. The server
    goes on (SIGCONT) at the end at the latest."""
    lock = env.home / "server" / "server.lock"
    starting = None
    with env.spawn("ps") as first:
        try:
            wait_until(lambda: bool(lock_holder(lock)), 60, "the server taking the home")
            starting = lock_holder(lock)
            assert starting
            os.kill(starting, signal.SIGSTOP)
            first.kill()
            first.wait()
            yield starting
        finally:
            if starting:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(starting, signal.SIGCONT)
            first.kill()


def test_a_command_killed_while_its_server_starts_leaves_one_server_for_the_next(
    env: Env,
) -> None:
    # The start lock dies with the command that holds it (`kill -9`), while the server it
    # started is still coming up: the next command finds no server yet and starts another,
    # which must leave the home (its database) to the first and wait for it.
    with _held_while_starting(env) as starting:
        second = env.spawn("ps")
        wait_until(lambda: "has this home" in _server_log(env), 60, "the second server")
        os.kill(starting, signal.SIGCONT)
        out, err = second.communicate(timeout=60)

    assert second.returncode == 0, err
    assert "No runs yet" in out
    assert _servers_of(env.home) == [starting]
    assert f"another local server (pid {starting}) has this home" in _server_log(env)
    assert json.loads((env.home / "server" / "server.json").read_text())["pid"] == starting


def test_stop_ends_a_server_still_starting(env: Env) -> None:
    with _held_while_starting(env) as starting:  # no `server.json` until it goes on
        stop = env.spawn("server", "stop")
        wait_until(lambda: _pending(starting, signal.SIGTERM), 60, "the stop's SIGTERM")
        os.kill(starting, signal.SIGCONT)
        out, err = stop.communicate(timeout=60)

    assert stop.returncode == 0, err
    assert out.strip() == f"Stopped the local server (pid {starting}, still starting)."
    assert not _alive(starting)


def _pending(pid: int, sig: int) -> bool:
    """Whether `sig` waits to be delivered to the (stopped) process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd", "ShdPnd"))]
    return any(mask & (1 << (sig - 1)) for mask in masks)


def _server_log(env: Env) -> str:
    path = env.home / "server" / "server.log"
    return path.read_text() if path.exists() else ""


def test_the_runner_logs_no_line_per_heartbeat(env: Env) -> None:
    env.extra_env["DSTACK_SERVER_RUNNER_HEARTBEAT_TIMEOUT"] = "3"
    assert env.dstack("ps").code == 0
    wait_until(lambda: (_status(env)["runner"] or {}).get("status") == "ready", 30, "runner")
    time.sleep(3)  # three heartbeats at the default 1 s interval
    env.dstack("server", "stop")

    log = (env.home / "server" / "runner.log").read_text()

    assert "registered as local" in log
    assert "heartbeat" not in log, log


def test_server_with_options_still_runs_in_the_foreground(env: Env) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dstack", "server", "--host", "127.0.0.1", "--port", str(port)],
        env={**env.environ(), "DSTACK_SERVER_ADMIN_TOKEN": "t" * 32},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), 60, "the foreground server")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert f"dstack server: http://127.0.0.1:{port}" in out.decode()
    assert _status(env)["running"] is False  # a foreground server is not the local one


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
