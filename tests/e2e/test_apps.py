"""Apps and dev environments of local runs: the CLI prints each app's URL once it answers,
rewrites the URLs the app prints, and `dstack attach` shows them again."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

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


class Attached:
    """A `dstack` command running in the background; its output read line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (proc.stdout, proc.stderr)
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: object) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            self.lines.put(line)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first line (seen so far or yet to come) that matches `pattern`."""
        regex = re.compile(pattern)
        for line in self.seen:
            if match := regex.search(line):
                return match
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern!r}:\n{self.text()}") from None
            self.seen.append(line)
            if match := regex.search(line):
                return match

    def text(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the command to end; its exit code (all its output is in `text()` then)."""
        code = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(10)
        self.text()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def app_env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, "process")
    # The apps (streamlit, jupyter, gradio) are installed in the test run's own Python, under
    # root's home, which the runner's job user cannot read (it would install them from PyPI):
    # these jobs run as root. tests/security/test_job_env.py covers the job user.
    e.extra_env["DSTACK_RUNNER_JOB_USER"] = "root"
    try:
        yield e
    finally:
        _stop_server(e.home)


@contextlib.contextmanager
def _attached(env: Env, *args: str) -> Iterator[Attached]:
    attached = Attached(env.spawn(*args))
    try:
        yield attached
    finally:
        attached.close()


def _running_run(env: Env, timeout: float = 60) -> str:
    """The name of the one run of this repository, once it is running."""
    found: list[str] = []

    def running() -> bool:
        runs = json.loads(env.dstack("ps", "--json").out)
        found[:] = [r["name"] for r in runs if r["status"] == "running"]
        return bool(found)

    wait_until(running, timeout, "a running run")
    return found[0]


def _stop(env: Env, name: str, attached: Attached) -> None:
    assert env.dstack("stop", "-x", name).code == 0
    attached.finish()


FASTAPI_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello() -> dict[str, str]:
    return {"hello": "world"}
"""


def test_a_fastapi_app_gets_its_url_printed_and_answers_there(app_env: Env) -> None:
    app_env.write("main.py", FASTAPI_APP)
    app_env.workflows(
        """
        workflows:
          - name: api
            provider: fastapi
            app: main:app
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "api") as attached:
        url = attached.expect(r"^app 'fastapi': (http://127\.0\.0\.1:(\d+)/)$").group(1)
        port = url.rsplit(":", 1)[1].rstrip("/")

        assert httpx.get(url).json() == {"hello": "world"}
        # uvicorn says where it listens: the attached view shows where the user reaches it
        attached.expect(rf"Uvicorn running on http://127\.0\.0\.1:{port}\b")
        name = _running_run(app_env)
        stored = app_env.dstack("logs", name)
        # a plain process listens on loopback only: the network cannot reach it
        assert f"Uvicorn running on http://127.0.0.1:{port}" in stored.out + stored.err
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((_outside_address(), int(port)), timeout=5).close()
        _stop(app_env, name, attached)
        assert "waiting for app 'fastapi' on port" in attached.text()


def test_a_bash_port_is_shown_by_attach_and_stopping_the_run_ends_the_attach(
    app_env: Env,
) -> None:
    app_env.workflows(
        """
        workflows:
          - name: files
            provider: bash
            ports: 1
            commands:
              - python -m http.server $PORT_0 --bind 0.0.0.0
        """
    )
    app_env.commit()
    submitted = app_env.dstack("run", "-d", "files")
    assert submitted.code == 0, submitted
    name = _running_run(app_env)
    with _attached(app_env, "attach", name) as attached:
        url = attached.expect(r"^app 'files': (http://127\.0\.0\.1:\d+/)$").group(1)
        assert httpx.get(url).status_code == 200
        attached.expect(r"\(http://127\.0\.0\.1:\d+/\)")  # http.server's banner, rewritten
        assert app_env.dstack("stop", name).code == 0
        assert attached.finish() != 0  # the run ended as stopped, and so did the attach
    assert app_env.run_json(name)["status"] == "stopped"


def test_jupyterlab_answers_with_its_token_and_runs_code(app_env: Env) -> None:
    app_env.workflows(
        """
        workflows:
          - name: ide
            provider: lab
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "ide") as attached:
        match = attached.expect(r"^app 'lab': (http://127\.0\.0\.1:(\d+))/lab\?token=([\w-]+)$")
        base, token = match.group(1), match.group(3)

        login = httpx.get(f"{base}/lab")  # without the token: to the login page
        assert login.status_code == 302
        assert "/login" in login.headers["location"]
        assert httpx.get(f"{base}/api/kernels").status_code == 403
        assert httpx.get(f"{base}/lab?token={token}").status_code == 200
        auth = {"Authorization": f"token {token}"}
        kernel = httpx.post(f"{base}/api/kernels", headers=auth, json={}).json()
        assert _execute(base, token, kernel["id"], "print(6*7)") == "42"
        _stop(app_env, _running_run(app_env), attached)


def _execute(base: str, token: str, kernel_id: str, code: str) -> str:
    """Run `code` on a kernel over its WebSocket (Jupyter messaging protocol); its output."""
    from websockets.sync.client import connect

    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False},
        "channel": "shell",
    }
    with connect(ws_url, additional_headers={"Authorization": f"token {token}"}) as ws:
        ws.send(json.dumps(request))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=30))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                return str(message["content"]["text"]).strip()
            if message["msg_type"] == "execute_result":
                return str(message["content"]["data"]["text/plain"])
            if message["msg_type"] == "error":
                raise AssertionError(message["content"])
    raise AssertionError("the kernel never answered")


def test_a_streamlit_app_answers(app_env: Env) -> None:
    app_env.write("app.py", "import streamlit as st\n\nst.write('hello')\n")
    app_env.workflows(
        """
        workflows:
          - name: dash
            provider: streamlit
            file: app.py
        """
    )
    app_env.commit()
    with _attached(app_env, "run", "dash") as attached:
        url = attached.expect(r"^app 'streamlit': (http://127\.0\.0\.1:\d+)/$").group(1)
        assert httpx.get(url + "/").status_code == 200
        assert httpx.get(url + "/_stcore/health").text == "ok"
        _stop(app_env, _running_run(app_env), attached)


def _outside_address() -> str:
    """An IPv4 address of this machine other than loopback."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    pytest.fail("this machine has no IPv4 address besides loopback")


@pytest.mark.docker
def test_docker_publishes_the_ports_on_loopback_only(tmp_path: Path) -> None:
    env = make_env(tmp_path, "docker")
    try:
        env.workflows(
            """
            workflows:
              - name: files
                provider: bash
                ports: 1
                commands:
                  - python -m http.server $PORT_0 --bind 0.0.0.0
            """
        )
        env.commit()
        with _attached(env, "run", "files") as attached:
            match = attached.expect(r"^app 'files': (http://127\.0\.0\.1:(\d+)/)$")
            url, port = match.group(1), int(match.group(2))
            assert httpx.get(url).status_code == 200
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((_outside_address(), port), timeout=5).close()
            _stop(env, _running_run(env), attached)
    finally:
        _stop_server(env.home)


def test_a_remote_runs_port_is_forwarded_to_this_machine(tmp_path: Path) -> None:
    server = TeamServer(home=tmp_path / "server-home")
    runner = RunnerProcess("r1", tmp_path / "runners" / "r1", server)
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    try:
        server.start()
        runner.start()
        wait_until(lambda: "r1" in online_runners(server), 30, "the runner")
        assert env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
        env.workflows(
            """
            workflows:
              - name: files
                provider: bash
                ports: 1
                commands:
                  - python -m http.server $PORT_0 --bind 0.0.0.0
            """
        )
        env.commit()
        with _attached(env, "run", "--remote", "files") as attached:
            match = attached.expect(r"^app 'files': (http://127\.0\.0\.1:(\d+)/)$")
            url, local = match.group(1), match.group(2)
            assert httpx.get(url, timeout=30).status_code == 200
            # the runner's port in http.server's banner became the forwarded one
            attached.expect(rf"\(http://127\.0\.0\.1:{local}/\)")
            runs = json.loads(env.dstack("ps", "--remote", "--json").out)
            assert env.dstack("stop", "--remote", "-x", runs[0]["name"]).code == 0
            attached.finish()
        with pytest.raises(httpx.ConnectError):  # the forward is closed with the command
            httpx.get(url, timeout=5)
    finally:
        runner.stop()
        server.stop()
        _stop_server(env.home)
