"""A team on loopback: a `dstack server` process, `dstack-runner` processes, a CLI user."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dstack.api.blobs import HttpBlobStore
from dstack.errors import StorageError

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: object, timeout: float = 30.0, what: str = "condition") -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class TeamServer:
    """`dstack server` on `host` (127.0.0.1 unless told) with a known admin token and a
    short runner timeout."""

    home: Path
    port: int = field(default_factory=free_port)
    runner_timeout: float = 3.0
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        # Older servers read their single token from this file; newer ones take the env var.
        token_file = self.home / "server" / "token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(ADMIN_TOKEN + "\n")
        token_file.chmod(0o600)
        env = dict(os.environ, DSTACK_SERVER_ADMIN_TOKEN=ADMIN_TOKEN, DSTACK_HOME=str(self.home))
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - kept for the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dstack",
                "server",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--home",
                str(self.home),
                "--runner-timeout",
                str(self.runner_timeout),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        wait_until(lambda: _answers(self.url), 30, "the server to answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def runner_token(self) -> str:
        """A runner registration token, where the server hands them out; else the admin's."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        try:
            response = httpx.post(f"{self.url}/api/runners/tokens", headers=headers, timeout=5)
        except httpx.HTTPError:
            return ADMIN_TOKEN
        if response.status_code in (200, 201):
            token: str = response.json()["token"]
            return token
        return ADMIN_TOKEN


@dataclass
class RunnerProcess:
    name: str
    work_dir: Path
    server: TeamServer
    labels: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    launcher: Callable[[list[str]], list[str]] | None = None
    """Turns the runner's command line into the one started (e.g. `NetNs.command`, to run
    it inside a network namespace); it must exec the runner, not fork it."""
    extra_args: list[str] = field(default_factory=list)
    """More options of `dstack-runner start` (e.g. `--metadata-url`)."""

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "dstack.runner", "start"]
        args += ["--server", self.server.url, "--name", self.name, "--executor", "process"]
        args += ["--work-dir", str(self.work_dir)]
        if self.labels:
            args += ["--labels", self.labels]
        args += self.extra_args
        if self.launcher is not None:
            args = self.launcher(args)
        env = dict(os.environ, DSTACK_RUNNER_TOKEN=self.server.runner_token())
        log = open(self.work_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def online_runners(server: TeamServer) -> set[str]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = httpx.get(f"{server.url}/api/runners", headers=headers, timeout=5)
    return {r["name"] for r in response.json() if r["status"] != "offline"}


class BrokenLinkStore(HttpBlobStore):
    """A remote's blob store whose link breaks after `uploads` uploads or `downloads`
    downloads (None: never), as an interrupted `dstack push` or `pull` sees it."""

    def __init__(
        self, url: str, token: str, *, uploads: int | None = None, downloads: int | None = None
    ) -> None:
        super().__init__(url, token)
        self.uploads = uploads
        self.downloads = downloads

    def put_file(self, path: Path, digest: str) -> None:
        if self.uploads is not None:
            if self.uploads <= 0:
                raise StorageError("connection reset by peer")
            self.uploads -= 1
        super().put_file(path, digest)

    def get_file(self, digest: str, target: Path) -> None:
        if self.downloads is not None:
            if self.downloads <= 0:
                raise StorageError("connection reset by peer")
            self.downloads -= 1
        super().get_file(digest, target)
