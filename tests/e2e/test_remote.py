"""Remote runs for teams, all real processes on loopback: a `dstack server`, two
`dstack-runner` processes, and a user whose CLI points at the server with `dstack config`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[TeamServer, list[RunnerProcess]]]:
    server = TeamServer(home=tmp_path / "server-home")
    runners = [RunnerProcess(n, tmp_path / "runners" / n, server) for n in ("r1", "r2")]
    try:
        server.start()
        for runner in runners:
            runner.start()
        wait_until(lambda: online_runners(server) >= {"r1", "r2"}, 30, "both runners")
        yield server, runners
    finally:
        for runner in runners:
            runner.stop()
        server.stop()


@pytest.fixture
def user(tmp_path: Path, team: tuple[TeamServer, list[RunnerProcess]]) -> Iterator[Env]:
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    server, _ = team
    result = env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN)
    assert result.code == 0, result
    try:
        yield env
    finally:
        _stop_server(env.home)


def _remote_run(env: Env, *args: str) -> str:
    result = env.dstack("run", "--remote", "-d", *args)
    assert result.code == 0, result
    return run_name_in(result.out + result.err)


def run_name_in(text: str) -> str:
    """The run name the CLI printed (`adjective-animal-N`)."""
    match = re.search(r"\b([a-z]+-[a-z]+-\d+)\b", text)
    assert match, text
    return match.group(1)


def _ps(env: Env, name: str) -> dict[str, object]:
    result = env.dstack("ps", name, "--json", "--remote")
    assert result.code == 0, result
    data: dict[str, object] = json.loads(result.out)
    return data


def _wait(env: Env, name: str, statuses: set[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        run = _ps(env, name)
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"{name} stayed {run['status']}"
        time.sleep(0.3)


def test_remote_run_of_a_two_step_workflow_shows_logs_and_exit_code(user: Env) -> None:
    user.workflows(
        """
        workflows:
          - name: prepare
            provider: bash
            commands:
              - mkdir -p out && echo prepared > out/data.txt
            artifacts: [out]
          - name: train
            provider: bash
            deps:
              - workflow: prepare
            commands:
              - echo "train sees $(cat out/data.txt)"
              - exit 3
        """
    )
    user.commit("workflows")
    result = user.dstack("run", "--remote", "train", timeout=120)
    assert result.code == 3, result
    assert "train sees prepared" in result.out
    local = user.dstack("ps", "-a", "--json")
    assert local.code == 0, local
    assert json.loads(local.out) == [], "the run must not be on the local server"


def test_logs_follow_is_live(user: Env) -> None:
    user.workflows(
        """
        workflows:
          - name: slow
            provider: bash
            commands:
              - for i in 1 2 3 4 5; do echo "line $i"; sleep 0.4; done
        """
    )
    user.commit("workflows")
    name = _remote_run(user, "slow")
    follower = user.spawn("logs", "-f", name, "--remote")
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert [line for line in out.splitlines() if line.startswith("line")] == [
        f"line {i}" for i in range(1, 6)
    ]


def test_two_runners_share_one_queue(user: Env) -> None:
    user.workflows(
        """
        workflows:
          - name: work
            provider: bash
            commands:
              - sleep 1.5 && echo done
        """
    )
    user.commit("workflows")
    names = [_remote_run(user, "work") for _ in range(4)]
    used = set()
    for name in names:
        run = _wait(user, name, {"done", "failed"})
        assert run["status"] == "done", run
        jobs = run["jobs"]
        assert isinstance(jobs, list)
        used.add(jobs[0]["runner_name"])
    assert used == {"r1", "r2"}


def test_runner_killed_mid_job_is_lost_then_retried_elsewhere(
    user: Env, team: tuple[TeamServer, list[RunnerProcess]]
) -> None:
    _, runners = team
    user.workflows(
        """
        workflows:
          - name: once
            provider: bash
            commands:
              - echo started && sleep 30
          - name: twice
            provider: bash
            retry: {limit: 1}
            commands:
              - echo "attempt on $(hostname)" && sleep 4 && echo finished
        """
    )
    user.commit("workflows")
    lost = _remote_run(user, "once")
    run = _wait(user, lost, {"running"})
    holder = run["jobs"][0]["runner_name"]  # type: ignore[index]
    victim = next(r for r in runners if r.name == holder)
    victim.kill()
    run = _wait(user, lost, {"failed"}, timeout=30)
    assert run["jobs"][0]["reason"] == "runner_lost", run  # type: ignore[index]

    retried = _remote_run(user, "twice")
    run = _wait(user, retried, {"running"})
    survivor = run["jobs"][0]["runner_name"]  # type: ignore[index]
    assert survivor != holder
    # Restart the lost runner under its name, then kill the one running the job.
    victim.start()
    wait_until(lambda: holder in online_runners(team[0]), 30, "the runner to come back")
    next(r for r in runners if r.name == survivor).kill()
    run = _wait(user, retried, {"done", "failed"}, timeout=60)
    job = run["jobs"][0]  # type: ignore[index]
    assert run["status"] == "done", run
    assert job["runner_name"] == holder
    assert job["attempt"] == 1
    assert any(h["reason"] == "runner_lost" for h in job["history"])
    logs = user.dstack("logs", retried, "--remote")
    assert "finished" in logs.out


def test_server_restarted_mid_run_loses_no_log_line_or_artifact(
    user: Env, team: tuple[TeamServer, list[RunnerProcess]]
) -> None:
    server, _ = team
    user.workflows(
        """
        workflows:
          - name: long
            provider: bash
            commands:
              - mkdir -p out
              - for i in $(seq 1 30); do echo "tick $i" | tee out/tick-$i; sleep 0.2; done
            artifacts: [out]
        """
    )
    user.commit("workflows")
    name = _remote_run(user, "long")
    _wait(user, name, {"running"})
    server.kill()
    time.sleep(1.5)
    server.start()
    run = _wait(user, name, {"done", "failed"}, timeout=90)
    assert run["status"] == "done", run
    logs = user.dstack("logs", name, "--remote")
    ticks = [line for line in logs.out.splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(1, 31)]
    target = user.repo.parent / "got"
    copied = user.dstack("cp", name, "out", str(target), "--remote")
    assert copied.code == 0, copied
    got = {p.name: p.read_text() for p in target.iterdir()}
    assert got == {f"tick-{i}": f"tick {i}\n" for i in range(1, 31)}


def test_push_a_tag_then_depend_on_it_remotely_and_pull_back(user: Env) -> None:
    user.workflows(
        """
        workflows:
          - name: make
            provider: bash
            commands:
              - mkdir -p model && echo weights > model/w.txt
            artifacts: [model]
          - name: use
            provider: bash
            deps:
              - tag: base
            commands:
              - mkdir -p report && echo "uses $(cat model/w.txt)" | tee report/r.txt
            artifacts: [report]
        """
    )
    user.commit("workflows")
    made = user.dstack("run", "make", "-t", "base", timeout=120)
    assert made.code == 0, made
    pushed = user.dstack("push", ":base", "--remote")
    assert pushed.code == 0, pushed
    assert "1 blob(s) copied" in pushed.out
    again = user.dstack("push", ":base", "--remote")
    assert again.code == 0, again
    assert "0 blob(s) copied" in again.out
    assert "1 already there" in again.out
    tags = user.dstack("tags", "list", "--json", "--remote")
    assert [t["name"] for t in json.loads(tags.out)] == ["base"]

    result = user.dstack("run", "--remote", "use", timeout=120)
    assert result.code == 0, result
    assert "uses weights" in result.out
    remote_name = run_name_in(result.out + result.err)

    pulled = user.dstack("pull", remote_name, "--remote")
    assert pulled.code == 0, pulled
    target = user.repo.parent / "copy"
    copied = user.dstack("cp", remote_name, "report", str(target))
    assert copied.code == 0, copied
    assert (target / "r.txt").read_text() == "uses weights\n"


def test_wrong_token_is_one_clear_line(
    tmp_path: Path, team: tuple[TeamServer, list[RunnerProcess]]
) -> None:
    server, _ = team
    (tmp_path / "stranger").mkdir()
    env = make_env(tmp_path / "stranger", "process")
    result = env.dstack("config", "--url", server.url, "--token", "not-the-token")
    assert result.code == 1
    assert result.err.startswith("Error: the dstack server rejected the token"), result
    assert "Traceback" not in result.err
    assert not (env.home / "config.yaml").exists()


RUN_NAME = re.compile(r"[a-z]+-[a-z]+-\d+ ")
BIG = """
workflows:
  - name: big
    provider: bash
    commands: [echo never]
    resources:
      cpu: 64
"""


@pytest.fixture
def lone_team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TeamServer, Env]]:
    """A team server with no runner yet (it waits 3 s for one to register), and its admin."""
    monkeypatch.setenv("DSTACK_SERVER_NO_RUNNER_GRACE", "3")
    server = TeamServer(home=tmp_path / "server-home")
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    try:
        server.start()
        assert env.dstack("config", "--url", server.url, "--token", ADMIN_TOKEN).code == 0
        env.workflows(BIG)
        env.commit()
        yield server, env
    finally:
        server.stop()
        _stop_server(env.home)


@pytest.fixture
def lone_server(lone_team: tuple[TeamServer, Env]) -> Env:
    return lone_team[1]


def test_a_job_no_runner_registers_for_says_it_waits_then_why_it_failed(
    lone_server: Env,
) -> None:
    attached = lone_server.dstack("run", "--remote", "big")

    assert attached.code == 1, attached
    lines = attached.err.splitlines()
    assert "pending (waiting for runner) — waiting for a runner to register" in lines
    assert lines[-1] == "failed (no capacity) — asked for 64 CPU; runners: none registered"


def test_at_a_terminal_the_waiting_line_gives_way_to_why_the_job_failed(
    lone_server: Env,
) -> None:
    from tests.e2e.test_run_path import Terminal

    term = Terminal(lone_server, "run", "--remote", "big")
    term.expect("waiting for a runner to register")  # the spinner's line

    assert term.finish() == 1
    shown = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", term.text())  # colours, line erasures
    last = shown.rstrip("\n").rsplit("to register", 1)[1]  # after the spinner's last frame
    assert last == "failed (no capacity) — asked for 64 CPU; runners: none registered", shown


def test_ps_has_a_user_column_once_two_users_ran_in_the_repository(
    lone_team: tuple[TeamServer, Env], tmp_path: Path
) -> None:
    server, admin = lone_team
    created = admin.dstack("users", "add", "bob", "--remote")
    assert created.code == 0, created
    bob = Env(repo=admin.repo, home=tmp_path / "bob-home", executor="process")
    assert bob.dstack("config", "--url", server.url, "--token", created.out.split()[-1]).code == 0

    alone = admin.dstack("run", "--remote", "-d", "big")
    before = admin.dstack("ps", "-a", "--remote")
    bobs = bob.dstack("run", "--remote", "-d", "big")
    after = admin.dstack("ps", "-a", "--remote")

    assert (alone.code, bobs.code) == (0, 0), (alone, bobs)
    assert before.out.splitlines()[0].split()[:2] == ["RUN", "WORKFLOW"]
    assert after.code == 0, after
    assert after.out.splitlines()[0].split()[:3] == ["RUN", "USER", "WORKFLOW"]
    users = {x.split()[0]: x.split()[1] for x in after.out.splitlines()[1:] if RUN_NAME.match(x)}
    assert users == {alone.out.strip(): "admin", bobs.out.strip(): "bob"}, after.out
