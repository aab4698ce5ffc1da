"""Cloud instances on loopback: a server in a thread of the test (so that its in-memory
twin is the test's), and a boot harness that "boots" each instance the twin creates by
running its user-data script with bash — its own DSTACK_HOME and work dir, the process
executor, dstack already on PATH — and kills it once the twin says it is terminated."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import uvicorn

from dstack.backends.memory import MemoryCompute
from dstack.backends.registry import ComputeFactory
from dstack.models.backends import (
    BackendConfig,
    BackendCredentials,
    CloudInstance,
    InstanceState,
    LaunchRequest,
)
from dstack.server.app import create_app, running_context
from dstack.server.db.models import BackendRow
from dstack.server.services.secrets import cipher
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore


class BootHarness:
    """`on_create` of a `MemoryCompute`: each instance runs its user data in
    `root/<instance id>/`, its output in `boot.log` there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def boot(self, instance: CloudInstance, request: LaunchRequest) -> None:
        home = self.root / instance.id
        home.mkdir(parents=True)
        script = home / "user-data.sh"
        script.write_text(request.user_data)
        env = dict(
            os.environ,
            HOME=str(home),
            DSTACK_HOME=str(home / ".dstack"),
            DOCKER_HOST="unix:///nonexistent/docker.sock",  # no engine: the process executor
            DSTACK_RUNNER_JOB_USER=getpass.getuser(),  # jobs run as the runner's own user
        )
        log = open(home / "boot.log", "wb")  # noqa: SIM115 - closed in `stop`
        self._logs.append(log)
        self.procs[instance.id] = subprocess.Popen(
            ["bash", str(script)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def watch(self, twin: MemoryCompute) -> None:
        """Kill the runner of every instance the twin no longer runs (terminated, taken
        back), as a cloud would."""

        def loop() -> None:
            while not self._stop.wait(0.1):
                for instance_id, proc in list(self.procs.items()):
                    gone = twin.instances[instance_id].state not in _RUNNING
                    if gone and proc.poll() is None:
                        _kill(proc)

        self._watcher = threading.Thread(target=loop, name="boot-harness", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for proc in self.procs.values():
            _kill(proc)
        for log in self._logs:
            log.close()

    def log(self, instance_id: str) -> str:
        return (self.root / instance_id / "boot.log").read_text(errors="replace")


_RUNNING = frozenset({InstanceState.PENDING, InstanceState.RUNNING})


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def add_backend(settings: ServerSettings, config: BackendConfig) -> None:
    """Store backend `config` (no credentials) in the server's database, migrating it first
    (as `dstack backends add` would, without its check)."""

    async def seed() -> None:
        async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
            secret = cipher(settings).encrypt(BackendCredentials().model_dump_json().encode())
            async with ctx.transaction() as session:
                session.add(
                    BackendRow(
                        name=config.name,
                        type=config.type.value,
                        config=config.model_dump(mode="json", exclude={"name", "type"}),
                        credentials=secret.decode(),
                        created_by=settings.user,
                        created_at=ctx.clock(),
                    )
                )

    asyncio.run(seed())


@contextlib.contextmanager
def serve(settings: ServerSettings, compute_factory: ComputeFactory) -> Iterator[str]:
    """The server app on `settings.port` of 127.0.0.1 in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", settings.port))
    app = create_app(settings, compute_factory=compute_factory)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "test server did not start"
    try:
        yield settings.url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
