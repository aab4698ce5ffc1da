"""The local server's own runner: a `dstack-runner` child process, restarted when it exits.

The runner outlives a crashed server (`dstack.runner.follow`): it keeps running its jobs and
follows the server's `server.json` to the next server's port. So a server that starts while
an earlier server's runner still holds the work dir (its lock, `dstack.runner.lock`) starts
no second runner: it waits for that one to exit, and stops it when it stops itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys

from dstack.runner.credential import CREDENTIAL_FILE, rebind_credential
from dstack.runner.lock import lock_holder
from dstack.server.settings import ServerSettings
from dstack.settings import RUNNER_TOKEN

logger = logging.getLogger(__name__)

_HEALTHY_AFTER = 60.0  # a runner that lived this long resets the restart back-off


class LocalRunnerSupervisor:
    """Starts the runner once the server answers (or, with `start_early`, while the server
    starts), restarts it when it exits (with back-off), and terminates it when cancelled."""

    def __init__(self, settings: ServerSettings, *, token: str) -> None:
        self.settings = settings
        self.token = token  # a runner registration token, not the admin's
        self.process: subprocess.Popen[bytes] | None = None
        self._early = False  # `process` was started by `start_early`, not yet waited for
        self.adopted: int | None = None
        """The pid of an earlier server's runner, still running (its jobs too) on our work dir."""

    def command(self) -> list[str]:
        base = self.settings.local_runner_command or [sys.executable, "-m", "dstack.runner"]
        work_dir = self.settings.resolved_runner_work_dir()
        # The token travels in the environment (see `_environ`), not on the command line
        # where any user of the machine could read it.
        command = [*base, "start", "--server", self.settings.url]
        command += ["--name", "local", "--work-dir", str(work_dir)]
        command += ["--server-file", str(self.settings.files.server_json)]
        if self.settings.local_runner_executor:
            command += ["--executor", self.settings.local_runner_executor]
        return command

    def start_early(self) -> None:
        """Start the runner now, before the server serves: it starts (about half a second
        of imports) while the server does, and its first request waits in the listening
        socket's queue until the server answers. The server must then know `token` before
        it serves (`running_context` records it). Not when an earlier server's runner
        holds the work dir: `run_forever` waits for that one."""
        self._keep_credential()
        if lock_holder(self.settings.resolved_runner_work_dir() / "runner.lock") is None:
            self._spawn()
            self._early = True

    async def run_forever(self) -> None:
        try:
            if not self._early:
                await self._wait_for_server()
            backoff = 1.0
            most = self.settings.runner_restart_max_seconds
            while True:
                lived = await self._run_once()
                backoff = 1.0 if lived > _HEALTHY_AFTER else min(backoff * 2, most)
                await asyncio.sleep(backoff)
        finally:
            await asyncio.shield(asyncio.to_thread(self.terminate))

    async def _run_once(self) -> float:
        """Run the runner until it exits; return how long it lived."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not self._early:
            self._keep_credential()
            await self._wait_for_work_dir()
            self._spawn()
        self._early = False
        process = self.process
        assert process is not None
        # A thread blocked in waitpid until the runner exits (polling would wake this
        # server forever); when cancelled, `terminate` ends the runner and so the thread.
        await asyncio.shield(asyncio.to_thread(process.wait))
        logger.warning("the local runner exited with code %s", process.returncode)
        return loop.time() - started

    def _spawn(self) -> None:
        log_path = self.settings.files.runner_log
        with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, RUNNER_TOKEN: self.token},
            )
        logger.info("started the local runner (pid %s)", self.process.pid)

    def _keep_credential(self) -> None:
        """This server listens on a new port at each start: its runner's credential, in a work
        dir only this server's runner uses, is made to name the new URL, so that the runner
        signs in with it as the same runner instead of registering another one."""
        work_dir = self.settings.resolved_runner_work_dir()
        rebind_credential(work_dir / CREDENTIAL_FILE, self.settings.url)

    async def _wait_for_work_dir(self) -> None:
        """Wait while an earlier server's runner holds the work dir (it follows this server
        meanwhile, and exits once idle and orphaned, or when this server stops it)."""
        lock = self.settings.resolved_runner_work_dir() / "runner.lock"
        while (holder := lock_holder(lock)) is not None:
            if self.adopted != holder:
                logger.info("the runner of an earlier server (pid %s) still runs: kept", holder)
            self.adopted = holder
            await asyncio.sleep(0.5)
        self.adopted = None

    async def _wait_for_server(self) -> None:
        # httpx: ~75 ms that a local server's start (its runner started early) does not wait for
        import httpx

        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.settings.url}/api/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)

    def terminate(self) -> None:
        """Stop the runner (and an earlier server's runner kept); waits for it. Idempotent."""
        self._terminate_adopted()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _terminate_adopted(self) -> None:
        """Stop an earlier server's runner this server kept (as it stops its own)."""
        pid = self.adopted
        lock = self.settings.resolved_runner_work_dir() / "runner.lock"
        if not pid or lock_holder(lock) != pid:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
