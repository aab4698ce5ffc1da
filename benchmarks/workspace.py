"""A user at a terminal: a temp git repository, its own `DSTACK_HOME`, the real `dstack` CLI.

The local server of that home is started once (warm, with its runner registered) before
anything is timed and stopped by `close()`.
"""

from __future__ import annotations

import getpass
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TEST_IMAGE = "dstack-test/python:3.11"


class BenchError(RuntimeError):
    """A scenario could not be measured (a command failed, output was wrong)."""


def user_environ() -> dict[str, str]:
    """This process's environment as a user's shell would have it: without
    `PYTHONDONTWRITEBYTECODE`, which a sandbox or CI may set. An installed package has its
    bytecode compiled (pip does it at install time); without it every sample would compile
    every module it imports, and `dstack` would be timed slower than any user sees it."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def dstack_command() -> list[str]:
    """The installed console script next to this interpreter (what a user types), or
    `python -m dstack` when there is none. Never a pyenv shim: it would add its own
    start-up to every sample."""
    script = Path(sys.executable).parent / "dstack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dstack"]


class Workspace:
    """A repository under `root/repo` and a dstack home under `root/home`."""

    def __init__(self, root: Path, *, executor: str = "process") -> None:
        self.root = root
        self.repo = root / "repo"
        self.home = root / "home"
        self.executor = executor
        self.overrides: dict[str, str] = {}  # environment variables of every command
        # The CLI's command server (dstack.cli.warm) of this workspace: its own, stopped by
        # `close()` and by `stop_command_server()` (a first command of the day has none).
        self.run_dir = root / "run"
        self.run_dir.mkdir(mode=0o700, parents=True)
        self.repo.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.write("README.md", "# benchmark\n")
        self.commit("initial")

    @classmethod
    def create(cls, parent: Path | None, *, executor: str = "process") -> Workspace:
        return cls(Path(tempfile.mkdtemp(prefix="dstack-bench-", dir=parent)), executor=executor)

    def environ(self) -> dict[str, str]:
        env = user_environ()
        env.update(
            DSTACK_HOME=str(self.home),
            XDG_RUNTIME_DIR=str(self.run_dir),
            DSTACK_EXECUTOR=self.executor,
            DSTACK_DEFAULT_IMAGE=TEST_IMAGE,
            # The scenarios' jobs read inputs the harness made once in its own private temp
            # dir (S4's 1 GiB file) by absolute path: as the harness's user, not a job user.
            DSTACK_RUNNER_JOB_USER=getpass.getuser(),
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@example.com",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@example.com",
        )
        env.update(self.overrides)
        return env

    def dstack(self, *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
        """Run the CLI to its end; its stdout. A non-zero exit is a `BenchError`."""
        return self.dstack_full(*args, cwd=cwd, timeout=timeout)[0]

    def dstack_full(
        self, *args: str, cwd: Path | None = None, timeout: float = 600
    ) -> tuple[str, str]:
        """As `dstack`, but (stdout, stderr)."""
        proc = subprocess.run(
            [*dstack_command(), *args],
            cwd=cwd or self.repo,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace")[-2000:]
            raise BenchError(f"dstack {' '.join(args)} exited {proc.returncode}: {tail}")
        return proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def submit(self, *args: str) -> str:
        """`dstack run -d ARGS`; the new run's name (from the table it prints)."""
        out, err = self.dstack_full("run", "-d", *args)
        lines = (out + err).splitlines()
        for header, first in itertools.pairwise(lines):
            if header.split()[:1] == ["RUN"] and first.split():
                return first.split()[0]
        raise BenchError(f"no run name in the output of dstack run -d: {out + err!r}")

    def newest_run(self) -> str:
        """Name of the most recently submitted run."""
        import json

        runs = json.loads(self.dstack("ps", "-a", "--json"))
        return str(runs[0]["name"])

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=self.repo,
            env=self.environ(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def write(self, path: str, text: str) -> Path:
        target = self.repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def workflows(self, text: str) -> None:
        """Replace `.dstack/workflows.yaml` and commit it."""
        self.write(".dstack/workflows.yaml", text)
        self.commit("workflows")

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message, "--allow-empty")

    def warm_server(self) -> None:
        """Start the local server (and its runner) and wait until a job has run through it,
        so no sample pays for the start."""
        self.workflows(
            """
            workflows:
              - name: warm-up
                provider: bash
                commands: [echo warm]
            """
        )
        deadline = time.monotonic() + 60
        while "warm" not in self.dstack("run", "warm-up"):
            if time.monotonic() > deadline:
                raise BenchError("the local server did not run a warm-up job within 60 s")
        if self.overrides.get("DSTACK_CLI_SERVER") != "0":
            self.wait_command_server()

    def wait_command_server(self) -> None:
        """Wait until the command server a command started as it exited listens."""
        deadline = time.monotonic() + 30
        while not list(Path(self.command_server_dir()).glob("*.sock")):
            if time.monotonic() > deadline:
                raise BenchError("the CLI's command server did not start within 30 s")
            time.sleep(0.05)

    def server_pid(self) -> int | None:
        from dstack.server.local import read_local_server

        info = read_local_server(self.home)
        return info.pid if info else None

    def close(self) -> None:
        """Stop the local server and the command server, and delete everything."""
        from dstack.server.local import stop_local_server

        stop_local_server(self.home)
        self.stop_command_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def command_server_dir(self) -> str:
        return str(self.run_dir / f"dstack-cli-{os.getuid()}")

    def command_server_pids(self) -> list[int]:
        from dstack.cli.warm import server_pids

        return server_pids(self.command_server_dir())

    def stop_command_server(self) -> list[int]:
        """Stop the command server of this workspace; the pids stopped."""
        from dstack.cli.warm import stop_servers

        return stop_servers(self.command_server_dir())
