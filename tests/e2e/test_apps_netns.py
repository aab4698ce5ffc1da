"""Apps of a remote run on a runner in a network of its own: the team server listens on the
host's end of a veth pair, the real `dstack-runner` (process executor) runs inside a network
namespace, and the user's `dstack run --remote` on the host reaches the apps only through
the ports it forwards to 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)
from tests.e2e.test_apps import Attached, _attached, _execute
from tests.infra.netns import NetNs, netns

__all__ = ["netns"]  # the fixture

RUNNER = "ns-runner"

SQUARE_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/square/{n}")
def square(n: int) -> dict[str, int]:
    return {"square": n * n}
"""


@pytest.fixture
def user(netns: NetNs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """A user on the host whose remote is a team server on the host's end of the veth pair,
    with one runner inside the namespace that reaches the server only through the pair."""
    # The apps are installed in the test run's own Python, under root's home, which the
    # runner's job user cannot read: these jobs run as root (see tests/security).
    monkeypatch.setenv("DSTACK_RUNNER_JOB_USER", "root")
    server = TeamServer(home=tmp_path / "server-home", host=netns.host_ip)
    runner = RunnerProcess(RUNNER, tmp_path / "runners" / RUNNER, server, launcher=netns.command)
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    try:
        server.start()
        runner.start()
        wait_until(lambda: RUNNER in online_runners(server), 30, "the runner in the namespace")
        assert env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
        yield env
    finally:
        runner.stop()
        server.stop()
        _stop_server(env.home)


def _running_remote_run(env: Env, timeout: float = 60) -> tuple[str, int]:
    """The one remote run's name and its job's first host port, once it is running."""
    found: list[str] = []

    def running() -> bool:
        runs = json.loads(env.dstack("ps", "--remote", "--json").out)
        found[:] = [r["name"] for r in runs if r["status"] == "running"]
        return bool(found)

    wait_until(running, timeout, "a running remote run")
    [job] = _remote_run(env, found[0])["jobs"]
    assert job["runner_name"] == RUNNER
    return found[0], int(job["host_ports"][0])


def _remote_run(env: Env, name: str) -> dict[str, Any]:
    result = env.dstack("ps", name, "--remote", "--json")
    assert result.code == 0, result
    run: dict[str, Any] = json.loads(result.out)
    return run


def _assert_forwarded(url_port: int, host_port: int) -> None:
    """The URL is a forward on the host, not the app: the app's port lives in the
    namespace's own network, so nothing answers on it on the host's loopback."""
    assert url_port != host_port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", host_port), timeout=5).close()


def _stop_and_check_closed(env: Env, name: str, attached: Attached, url: str) -> None:
    assert env.dstack("stop", name, "--remote").code == 0
    attached.finish()
    assert _remote_run(env, name)["status"] == "stopped"
    with pytest.raises(httpx.ConnectError):  # the forward is closed with the command
        httpx.get(url, timeout=5)


def test_a_fastapi_app_inside_another_network_answers_through_the_forward(user: Env) -> None:
    user.write("main.py", SQUARE_APP)
    user.workflows(
        """
        workflows:
          - name: api
            provider: fastapi
            app: main:app
        """
    )
    user.commit()
    with _attached(user, "run", "--remote", "api") as attached:
        match = attached.expect(r"^app 'fastapi': (http://127\.0\.0\.1:(\d+)/)$", timeout=120)
        url, local = match.group(1), int(match.group(2))
        name, host_port = _running_remote_run(user)
        _assert_forwarded(local, host_port)

        answer = httpx.get(f"{url}square/7", timeout=30)
        assert answer.status_code == 200
        assert answer.json() == {"square": 49}
        # uvicorn's banner names the runner's port; the attached view shows the forward
        attached.expect(rf"Uvicorn running on http://127\.0\.0\.1:{local}\b")
        _stop_and_check_closed(user, name, attached, url)


def test_jupyterlab_inside_another_network_runs_code_through_the_forward(user: Env) -> None:
    user.workflows(
        """
        workflows:
          - name: ide
            provider: lab
        """
    )
    user.commit()
    with _attached(user, "run", "--remote", "ide") as attached:
        pattern = r"^app 'lab': (http://127\.0\.0\.1:(\d+))/lab\?token=([\w-]+)$"
        match = attached.expect(pattern, timeout=120)
        base, local, token = match.group(1), int(match.group(2)), match.group(3)
        name, host_port = _running_remote_run(user)
        _assert_forwarded(local, host_port)

        login = httpx.get(f"{base}/lab", timeout=30)  # without the token: to the login page
        assert login.status_code == 302
        assert "/login" in login.headers["location"]
        assert httpx.get(f"{base}/api/kernels", timeout=30).status_code == 403
        assert httpx.get(f"{base}/lab?token={token}", timeout=30).status_code == 200
        auth = {"Authorization": f"token {token}"}
        kernel = httpx.post(f"{base}/api/kernels", headers=auth, json={}, timeout=30).json()
        assert _execute(base, token, kernel["id"], "print(6*7)") == "42"
        _stop_and_check_closed(user, name, attached, f"{base}/lab")


def test_a_streamlit_app_inside_another_network_answers_through_the_forward(user: Env) -> None:
    user.write("app.py", "import streamlit as st\n\nst.write('hello')\n")
    user.workflows(
        """
        workflows:
          - name: dash
            provider: streamlit
            file: app.py
        """
    )
    user.commit()
    with _attached(user, "run", "--remote", "dash") as attached:
        match = attached.expect(r"^app 'streamlit': (http://127\.0\.0\.1:(\d+))/$", timeout=120)
        url, local = match.group(1), int(match.group(2))
        name, host_port = _running_remote_run(user)
        _assert_forwarded(local, host_port)

        assert httpx.get(url + "/", timeout=30).status_code == 200
        assert httpx.get(url + "/_stcore/health", timeout=30).text == "ok"
        _stop_and_check_closed(user, name, attached, url + "/")
