"""`--remote [NAME]` on every command that talks to a server: the next word is the remote's
name only when a configured remote has that name; else `--remote` means the default remote
and the word stays the command's argument (a run, a workflow)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.test_completion import complete
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)

from dstack.models.job import JobStatus


@pytest.fixture
def team(tmp_path: Path) -> Iterator[TeamServer]:
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
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    for name in ("team", "other"):
        result = env.dstack("config", "--name", name, "--url", team.url, "--token", ADMIN_TOKEN)
        assert result.code == 0, result
    env.workflows(
        """
        workflows:
          - name: train
            provider: bash
            commands:
              - echo training started
              - sleep 60
        """
    )
    env.commit("workflows")
    try:
        yield env
    finally:
        _stop_server(env.home)


def _local_server_started(env: Env) -> bool:
    return (env.home / "server" / "server.json").exists()


def _submit(env: Env) -> str:
    result = env.dstack("run", "-d", "--remote", "train")
    assert result.code == 0, result
    match = re.search(r"\b([a-z]+-[a-z]+-\d+)\b", result.out + result.err)
    assert match, result
    return match.group(1)


def _logs_show(env: Env, name: str, text: str) -> bool:
    result = env.dstack("logs", "--remote", name)
    assert result.code == 0, result
    return text in result.out


def _status(env: Env, name: str) -> str:
    status: str = json.loads(env.dstack("ps", "--remote", name, "--json").out)["status"]
    return status


def test_remote_before_a_run_name_means_the_default_remote(user: Env) -> None:
    name = _submit(user)
    wait_until(lambda: _logs_show(user, name, "training started"), 60, "the job's output")

    stopped = user.dstack("stop", "--remote", name, "-y")

    assert stopped.code == 0, stopped
    assert "no remote named" not in stopped.err
    wait_until(lambda: _status(user, name) == "stopped", 60, "the run to stop")
    assert not _local_server_started(user), "nothing may go to the local server"


def test_remote_after_a_workflow_s_name_submits_there_and_starts_no_local_server(
    user: Env,
) -> None:
    submitted = user.dstack("run", "-d", "train", "--remote")
    assert submitted.code == 0, submitted
    name = submitted.out.strip().splitlines()[-1]

    assert not JobStatus(_status(user, name)).is_finished()  # alive on the remote
    assert not _local_server_started(user), "a run on a remote starts no local server"
    assert user.dstack("stop", "--remote", name, "-y").code == 0


def test_remote_followed_by_a_remote_name_takes_it(user: Env) -> None:
    by_name = user.dstack("ps", "--remote", "other", "--json")
    explicit = user.dstack("ps", "--remote=other", "--json")
    unknown = user.dstack("ps", "--remote=nowhere")

    assert (by_name.code, explicit.code) == (0, 0), (by_name, explicit)
    assert json.loads(by_name.out) == json.loads(explicit.out)
    assert unknown.code == 1
    assert "no remote named 'nowhere' (known: team, other)" in unknown.err
    assert not _local_server_started(user)


def test_plan_takes_remote_and_asks_the_remote_server(user: Env) -> None:
    before = user.dstack("plan", "--remote", "train", "--json")
    after = user.dstack("plan", "train", "--remote")

    assert before.code == 0, before
    assert after.code == 0, after
    data = json.loads(before.out)
    assert [job["workflow_name"] for job in data["jobs"]] == ["train"]
    assert "--remote" not in json.dumps(data["jobs"]), "--remote is not a workflow argument"
    assert "Cache:" in after.out
    assert not _local_server_started(user), "plan --remote must not start the local server"


def test_remote_on_a_nested_command_and_after_the_arguments(user: Env) -> None:
    added = user.dstack("secrets", "add", "TOKEN", "v1", "--remote")
    listed = user.dstack("secrets", "list", "--remote", "team", "--json")

    assert added.code == 0, added
    assert listed.code == 0, listed
    assert [s["name"] for s in json.loads(listed.out)] == ["TOKEN"]
    assert not _local_server_started(user)


def test_completion_after_remote_offers_remotes_and_the_default_remotes_runs(user: Env) -> None:
    name = _submit(user)

    assert complete(user, "dstack logs --remote ") == ["team", "other", name]
    assert complete(user, "dstack logs --remote other ") == [name]
    assert not _local_server_started(user)
