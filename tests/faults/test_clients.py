"""Clients ride out restarts: an attached `dstack run`, `dstack logs -f` and `dstack attach`
keep going while their server is killed and started again, print each log line once, and
give up with exit code 75 when it never comes back. All real processes: a `dstack server` on
a loopback port with a `dstack-runner`, the local server, the `dstack` CLI, `kill -9`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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

from dstack.server.local import read_local_server

TICKS = 60
TICKS_WORKFLOW = f"""
    workflows:
      - name: ticks
        provider: bash
        commands:
          - for i in $(seq 1 {TICKS}); do echo "tick $i"; sleep 0.1; done
          - exit 3
    """
EXPECTED = [f"tick {i}" for i in range(1, TICKS + 1)]
RECONNECTING = "server unreachable, reconnecting…"
GAVE_UP_EXIT = 75


@dataclass
class Cli:
    """A `dstack` command in the background, its stdout and stderr kept apart in files."""

    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @classmethod
    def spawn(cls, env: Env, *args: str) -> Cli:
        tag = f"{args[0]}-{time.monotonic_ns()}"
        out_path = env.repo.parent / f"{tag}.out"
        err_path = env.repo.parent / f"{tag}.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dstack", *args],
                cwd=env.repo,
                env=env.environ(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                # Ctrl+C must reach it even when the test run itself ignores SIGINT.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        return cls(proc, out_path, err_path)

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, pattern: str, *, stream: str = "err", timeout: float = 60) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None or re.search(pattern, self._text(stream)), str(self)
            return re.search(pattern, self._text(stream)) is not None

        wait_until(seen, timeout, f"{pattern!r} on {stream}")

    def _text(self, stream: str) -> str:
        return self.out if stream == "out" else self.err

    def finish(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __str__(self) -> str:
        return f"exit {self.proc.poll()}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@pytest.fixture
def team(tmp_path: Path) -> Iterator[TeamServer]:
    """A team server on a free loopback port with one runner."""
    server = TeamServer(home=tmp_path / "server-home")
    runner = RunnerProcess("r1", tmp_path / "runners" / "r1", server)
    try:
        server.start()
        runner.start()
        wait_until(lambda: "r1" in online_runners(server), 30, "the runner")
        yield server
    finally:
        runner.stop()
        server.stop()


@pytest.fixture
def user(tmp_path: Path, team: TeamServer) -> Iterator[Env]:
    """A user whose default remote is the team server, with the ticks workflow committed."""
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    configured = env.dstack("config", "--url", team.url, "--token", ADMIN_TOKEN)
    assert configured.code == 0, configured
    env.workflows(TICKS_WORKFLOW)
    env.commit("workflows")
    try:
        yield env
    finally:
        _stop_server(env.home)


@pytest.fixture
def clis() -> Iterator[list[Cli]]:
    """Commands started by a test; killed at its end if still running."""
    started: list[Cli] = []
    yield started
    for cli in started:
        cli.close()


def _spawn(clis: list[Cli], env: Env, *args: str) -> Cli:
    cli = Cli.spawn(env, *args)
    clis.append(cli)
    return cli


def _run_name(text: str) -> str:
    match = re.search(r"\b([a-z]+-[a-z]+-\d+)\b", text)
    assert match, text
    return match.group(1)


def _restart(server: TeamServer, cli: Cli) -> None:
    """`kill -9` the team server while `cli` is attached, then start it on the same port."""
    server.kill()
    cli.wait_for(re.escape(RECONNECTING))
    server.start()


def _ticks(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("tick ")]


def _said_once(err: str, line: str) -> bool:
    return err.splitlines().count(line) == 1


def test_an_attached_remote_run_rides_out_a_server_restart(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    cli = _spawn(clis, user, "run", "--remote", "ticks")
    cli.wait_for(r"tick 5\n", stream="out")

    _restart(team, cli)

    assert cli.finish() == 3, str(cli)
    assert _ticks(cli.out) == EXPECTED, str(cli)
    assert _said_once(cli.err, RECONNECTING), str(cli)
    assert _said_once(cli.err, "reconnected"), str(cli)
    assert "cannot reach" not in cli.err


def test_logs_follow_rides_out_a_server_restart_without_a_duplicate_or_gap(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    submitted = user.dstack("run", "--remote", "-d", "ticks")
    assert submitted.code == 0, submitted
    name = _run_name(submitted.out + submitted.err)
    # The varied form: the JSON stream, whose (job, seq) pairs show a repeat or a hole.
    cli = _spawn(clis, user, "logs", name, "-f", "--json", "--remote")
    cli.wait_for(r"tick 5\\n", stream="out")

    _restart(team, cli)

    assert cli.finish() == 0, str(cli)
    events = [json.loads(line) for line in cli.out.splitlines()]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)), str(cli)
    assert _ticks("".join(event["data"] for event in events)) == EXPECTED, str(cli)
    assert _said_once(cli.err, RECONNECTING), str(cli)
    assert _said_once(cli.err, "reconnected"), str(cli)


def test_attach_reconnects_and_its_port_forward_answers_again(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    user.workflows(
        """
        workflows:
          - name: files
            provider: bash
            ports: 1
            commands:
              - python -m http.server $PORT_0 --bind 0.0.0.0
        """
    )
    user.commit("app")
    submitted = user.dstack("run", "--remote", "-d", "files")
    assert submitted.code == 0, submitted
    name = _run_name(submitted.out + submitted.err)
    cli = _spawn(clis, user, "attach", name, "--remote")
    cli.wait_for(r"app 'files': http://127\.0\.0\.1:\d+/")
    url = re.search(r"app 'files': (http://127\.0\.0\.1:\d+/)", cli.err)
    assert url, str(cli)
    assert httpx.get(url.group(1), timeout=30).status_code == 200

    _restart(team, cli)
    cli.wait_for(r"(?m)^reconnected$")

    def answers() -> bool:
        try:  # each connection opens its own tunnel: the runner's end reconnects too
            return httpx.get(url.group(1), timeout=30).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, "the app through the same local port")
    assert user.dstack("stop", "--remote", "-x", name).code == 0
    assert cli.finish() != 0, cli  # the run ended as stopped, and so did the attach
    assert _said_once(cli.err, RECONNECTING), str(cli)


def test_a_server_that_never_comes_back_is_one_line_and_exit_75(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    cli = _spawn(clis, user, "run", "--remote", "--reconnect-timeout", "2", "ticks")
    cli.wait_for(r"tick 2\n", stream="out")

    team.kill()

    assert cli.finish() == GAVE_UP_EXIT, str(cli)
    errors = [line for line in cli.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, str(cli)
    assert "gave up after 2s without the server" in errors[0]
    assert "dstack attach" in errors[0]
    assert "Traceback" not in cli.err
    assert _said_once(cli.err, RECONNECTING), str(cli)


def test_logs_follow_gives_up_by_the_bound_from_the_environment(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    submitted = user.dstack("run", "--remote", "-d", "ticks")
    assert submitted.code == 0, submitted
    name = _run_name(submitted.out + submitted.err)
    user.extra_env["DSTACK_RECONNECT_TIMEOUT"] = "1"
    cli = _spawn(clis, user, "logs", name, "-f", "--remote")
    cli.wait_for(r"tick 2\n", stream="out")

    team.kill()

    assert cli.finish() == GAVE_UP_EXIT, str(cli)
    assert "gave up after 1s without the server" in cli.err
    assert "Traceback" not in cli.err


def test_ctrl_c_while_reconnecting_detaches_cleanly(
    user: Env, team: TeamServer, clis: list[Cli]
) -> None:
    cli = _spawn(clis, user, "run", "--remote", "ticks")
    cli.wait_for(r"tick 2\n", stream="out")
    team.kill()
    cli.wait_for(re.escape(RECONNECTING))

    cli.proc.send_signal(signal.SIGINT)

    assert cli.finish(30) == 0, str(cli)
    assert "Detached. The run keeps going" in cli.err
    assert "Traceback" not in cli.err


@pytest.fixture
def local_user(tmp_path: Path) -> Iterator[Env]:
    env = make_env(tmp_path, "process")
    env.workflows(TICKS_WORKFLOW)
    env.commit("workflows")
    try:
        yield env
    finally:
        _stop_server(env.home)


def test_a_local_run_reconnects_to_the_local_server_started_again(
    local_user: Env, clis: list[Cli]
) -> None:
    """The local server listens on a new port at each start: the attached run finds it
    (and starts it, as any command would) instead of calling the old address."""
    cli = _spawn(clis, local_user, "run", "ticks")
    cli.wait_for(r"tick 5\n", stream="out")
    before = read_local_server(local_user.home)
    assert before is not None

    os.kill(before.pid, signal.SIGKILL)

    code = cli.finish()
    after = read_local_server(local_user.home)
    assert after is not None, str(cli)
    assert after.pid != before.pid, str(cli)
    assert _said_once(cli.err, RECONNECTING), str(cli)
    assert _said_once(cli.err, "reconnected"), str(cli)
    # Whatever became of the job, the command printed what the server holds, once each,
    # and exits as the run ended.
    name = _run_name(cli.err)
    logs = local_user.dstack("logs", name)
    assert logs.code == 0, logs
    assert _ticks(cli.out) == _ticks(logs.out), str(cli)
    run = local_user.run_json(name)
    assert code == _exit_code(run), (run, str(cli))


def _exit_code(run: dict[str, object]) -> int:
    """`dstack run`'s exit code for a finished run, as `cli.follow.exit_code_of` says."""
    if run["status"] == "done":
        return 0
    jobs = run["jobs"]
    assert isinstance(jobs, list)
    for job in jobs:
        if job["status"] in ("failed", "stopped", "aborted") and job.get("exit_code"):
            return int(job["exit_code"])
    return 1
