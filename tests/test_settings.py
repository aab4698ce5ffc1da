"""`dstack.settings`: every `DSTACK_*` variable read in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dstack.errors import ConfigError
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
