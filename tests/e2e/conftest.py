"""End-to-end fixtures: the real `dstack` CLI in a temporary git repository and DSTACK_HOME."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TEST_IMAGE = "dstack-test/python:3.11"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Env:
    """A user at a terminal: a git repository, a DSTACK_HOME and the `dstack` command."""

    repo: Path
    home: Path
    executor: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DSTACK_HOME=str(self.home),
            DSTACK_EXECUTOR=self.executor,
            DSTACK_DEFAULT_IMAGE=TEST_IMAGE,
        )
        env.update(self.extra_env)  # may replace the ones above
        return env

    def dstack(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "dstack", *args],
            cwd=cwd or self.repo,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *args: str, prepare: Callable[[], None] | None = None) -> subprocess.Popen[str]:
        """`dstack ARGS` running; `prepare` runs in the child before it (signal dispositions,
        resource limits: what the shell a user starts it from would have set)."""

        def preexec() -> None:
            # Ctrl+C must reach it even when the test run itself ignores SIGINT (a
            # background job of a non-interactive shell does).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if prepare is not None:
                prepare()

        return subprocess.Popen(
            [sys.executable, "-m", "dstack", *args],
            cwd=self.repo,
            env=self.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=preexec,
        )

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.repo, check=True, capture_output=True, text=True
        ).stdout

    def write(self, path: str, text: str) -> Path:
        target = self.repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def workflows(self, text: str) -> None:
        self.write(".dstack/workflows.yaml", text)

    def commit(self, message: str = "change") -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message)

    def run_json(self, name: str) -> dict[str, Any]:
        result = self.dstack("ps", name, "--json")
        assert result.code == 0, result
        data: dict[str, Any] = json.loads(result.out)
        return data

    def wait_for(self, name: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run_json(name)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {name} stayed {run['status']}, wanted {statuses}")
            time.sleep(0.2)


def _stop_server(home: Path) -> None:
    from dstack.server.local import stop_local_server

    stop_local_server(home)


def make_env(tmp: Path, executor: str) -> Env:
    repo = tmp / "repo"
    repo.mkdir()
    env = Env(repo=repo, home=tmp / "home", executor=executor)
    env.git("init", "-q", "-b", "main")
    env.write("README.md", "# test\n")
    env.commit("initial")
    return env


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A fresh repository and home, for each executor; the local server is stopped at the end."""
    e = make_env(tmp_path, request.param)
    try:
        yield e
    finally:
        _stop_server(e.home)


@pytest.fixture
def process_env(tmp_path: Path) -> Iterator[Env]:
    """As `env`, process executor only (behaviour that does not depend on the executor)."""
    e = make_env(tmp_path, "process")
    try:
        yield e
    finally:
        _stop_server(e.home)
