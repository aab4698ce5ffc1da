"""`dstack.settings`: every `DSTACK_*` variable read in one place."""

from __future__ import annotations

import ast
import dataclasses
import re
import signal
from pathlib import Path

import click
import pytest

from dstack import settings
from dstack.errors import ConfigError
from dstack.runner.clone import GitTimeouts
from dstack.runner.settings import RunnerSettings
from dstack.server.settings import ServerSettings
from dstack.settings import SERVER_DURATIONS, EnvSettings


def test_unset_and_empty_variables_leave_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/users/ann")
    env = EnvSettings.read({"DSTACK_EXECUTOR": "", "DSTACK_SERVER_GC_GRACE": ""})
    assert env == EnvSettings(home=Path("/users/ann/.dstack"))


def test_variables_are_read() -> None:
    env = EnvSettings.read(
        {
            "DSTACK_HOME": "/srv/dstack",
            "DSTACK_EXECUTOR": "process",
            "DSTACK_SERVER_ADMIN_TOKEN": "t0k",
            "DSTACK_SERVER_SECRET_KEY": "k3y",
            "DSTACK_SERVER_NO_RUNNER_GRACE": "5",
            "DSTACK_SERVER_GC_GRACE": "0",
            "DSTACK_SERVER_PRESIGN_TTL": "600",
        }
    )
    assert env.layout.server.dir == Path("/srv/dstack/server")
    assert (env.executor, env.server_admin_token, env.server_secret_key) == (
        "process",
        "t0k",
        "k3y",
    )
    assert env.server_durations == {
        "no_runner_grace_seconds": 5.0,
        "gc_grace_seconds": 0.0,
        "presign_url_seconds": 600.0,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DSTACK_EXECUTOR", "kubernetes"),
        ("DSTACK_SERVER_GC_GRACE", "an hour"),
        ("DSTACK_SERVER_GC_GRACE", "-1"),
        ("DSTACK_SERVER_GC_GRACE", "nan"),
        ("DSTACK_SERVER_RUNNER_TIMEOUT", "0.5"),
        ("DSTACK_SERVER_UPLOADING_TIMEOUT", "inf"),
    ],
)
def test_an_invalid_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        EnvSettings.read({name: value})


def test_every_duration_is_a_server_settings_field_in_seconds(tmp_path: Path) -> None:
    fields = {f.name: f for f in dataclasses.fields(ServerSettings)}
    for duration in SERVER_DURATIONS:
        assert fields[duration.field].type == "float", duration
    changed = ServerSettings(home=tmp_path).with_durations({"no_runner_grace_seconds": 2.0})
    assert changed.no_runner_grace_seconds == 2.0
    with pytest.raises(ValueError, match="port"):
        ServerSettings(home=tmp_path).with_durations({"port": 1.0})


def test_runner_work_dir_follows_dstack_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSTACK_HOME", str(tmp_path))
    assert RunnerSettings(server_url="http://x", token="t").work_dir == tmp_path / "runner"


def test_the_grace_periods_and_timeouts_added_here_are_read(tmp_path: Path) -> None:
    env = EnvSettings.read(
        {
            "DSTACK_HOME": str(tmp_path),
            "DSTACK_SERVER_KEEP_ALIVE": "12",
            "DSTACK_SERVER_RUNNER_RESTART_MAX": "4",
            "DSTACK_LOCAL_SERVER_START_TIMEOUT": "90",
        }
    )
    assert env.server_durations == {"keep_alive_seconds": 12.0, "runner_restart_max_seconds": 4.0}
    assert env.local_server_start_timeout == 90.0
    assert EnvSettings.read({}).local_server_start_timeout == 30.0
    settings = ServerSettings(home=tmp_path).with_durations(env.server_durations)
    assert (settings.keep_alive_seconds, settings.runner_restart_max_seconds) == (12.0, 4.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DSTACK_LOCAL_SERVER_START_TIMEOUT", "0"),
        ("DSTACK_LOCAL_SERVER_START_TIMEOUT", "soon"),
        ("DSTACK_SERVER_KEEP_ALIVE", "0.5"),
        ("DSTACK_SERVER_RUNNER_RESTART_MAX", "-3"),
    ],
)
def test_an_invalid_new_duration_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        EnvSettings.read({name: value})


def test_the_server_keeps_idle_connections_as_long_as_set() -> None:
    from fastapi import FastAPI

    from dstack.server.listen import server_config

    config = server_config(FastAPI(), access_log=False, keep_alive=7.5)
    assert config.timeout_keep_alive == 8


def test_default_images_and_test_hooks_are_read_here(tmp_path: Path) -> None:
    env = EnvSettings.read(
        {
            "DSTACK_DEFAULT_IMAGE": "local/py:{python}",
            "DSTACK_DEFAULT_GPU_IMAGE": "",
            "DSTACK_RUNNER_TEST_CRASH_AT": "artifacts-stored",
            "DSTACK_RUNNER_TEST_CRASH_COUNT": str(tmp_path / "count"),
        }
    )
    assert env.images == {"default_image": "local/py:{python}"}
    assert (env.runner_crash_at, env.runner_crash_count) == ("artifacts-stored", tmp_path / "count")
    assert settings.fault_hooks({"DSTACK_RUNNER_FAULT_HOOKS": str(tmp_path)}) == tmp_path
    assert settings.fault_hooks({"DSTACK_RUNNER_FAULT_HOOKS": ""}) is None


# Variables dstack sets for the jobs it runs (never read by dstack itself).
JOB_VARIABLES = {
    "DSTACK_WORKFLOW",
    "DSTACK_RUN_NAME",
    "DSTACK_JOB_ID",
    "DSTACK_APP_HOST",
    "DSTACK_CODE_TOKEN",
    "DSTACK_NODE_RANK",
    "DSTACK_NODES_NUM",
    "DSTACK_MASTER_NODE_IP",
    "DSTACK_MASTER_JOB_ID",
}
SRC = Path(settings.__file__).parent


def _dstack_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"DSTACK_[A-Z0-9_]+", node.value)
    }


def test_no_module_but_settings_names_a_variable() -> None:
    """A `DSTACK_*` name as a string anywhere else is a variable read behind settings' back
    (or one of those dstack sets for jobs)."""
    found = {
        f"{path.relative_to(SRC)}: {name}"
        for path in SRC.rglob("*.py")
        if path != Path(settings.__file__)
        for name in _dstack_names(path) - JOB_VARIABLES
    }
    assert found == set()


def _options_with_variables() -> dict[str, str]:
    from dstack.cli.main import COMMANDS, cli
    from dstack.runner.cli import cli as runner_cli

    commands: list[click.Command] = [
        *(c for name in COMMANDS if (c := cli.get_command(click.Context(cli), name)) is not None),
        *runner_cli.commands.values(),
    ]
    found: dict[str, str] = {}
    for command in commands:
        subcommands = command.commands.values() if isinstance(command, click.Group) else []
        for each in (command, *subcommands):
            for param in each.params:
                if isinstance(param, click.Option) and param.envvar:
                    assert isinstance(param.envvar, str), param
                    found[param.envvar] = max(param.opts, key=len)
    return found


def test_the_options_bound_to_a_variable_are_the_listed_ones() -> None:
    assert _options_with_variables() == settings.OPTION_VARIABLES


def test_runner_start_options_reach_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dstack.runner import cli as runner_cli

    seen: list[RunnerSettings] = []

    class Runner:
        def __init__(self, runner_settings: RunnerSettings, api: object) -> None:
            seen.append(runner_settings)

        def run(self) -> None:
            pass

        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(runner_cli, "Runner", Runner)
    monkeypatch.setenv("DSTACK_RUNNER_TOKEN", "reg-token")
    monkeypatch.setenv("DSTACK_DEFAULT_IMAGE", "local/python")
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # the handlers stay pytest's
    runner_cli.main(
        [
            "start",
            "--server",
            "http://127.0.0.1:9",
            "--work-dir",
            str(tmp_path),
            "--job-user",
            "",
            "--heartbeat-interval",
            "0.5",
            "--claim-wait",
            "3",
            "--git-fetch-timeout",
            "60",
            "--git-lock-timeout",
            "120",
        ]
    )
    (got,) = seen
    assert (got.token, got.heartbeat_interval, got.claim_wait) == ("reg-token", 0.5, 3.0)
    assert got.git_timeouts == GitTimeouts(fetch=60.0, lock=120.0)
    assert got.images.default_image == "local/python"


def test_runner_start_refuses_a_claim_wait_the_server_would_refuse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dstack.runner import cli as runner_cli

    with pytest.raises(SystemExit) as exc:
        runner_cli.main(["start", "--server", "http://x", "--token", "t", "--claim-wait", "61"])
    assert exc.value.code == 2
    assert "--claim-wait" in capsys.readouterr().err
