"""`dstack.paths`: the dstack home and its layout, named in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstack.paths import HomeLayout, resolve_home
from dstack.server.settings import ServerSettings


def test_home_is_the_variable_else_dot_dstack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/users/ann")
    assert resolve_home("/srv/dstack") == Path("/srv/dstack")
    assert resolve_home("~/other") == Path("/users/ann/other")
    assert resolve_home(None) == resolve_home("") == Path("/users/ann/.dstack")


def test_layout_under_the_home() -> None:
    layout = HomeLayout(Path("/h"))
    server = layout.server
    assert layout.config_file == Path("/h/config.yaml")
    assert layout.cache_dir == Path("/h/cache")
    assert layout.runner_dir == Path("/h/runner")
    assert server.dir == Path("/h/server")
    named = {
        server.token: "token",
        server.admin_token: "admin_token",
        server.secret_key: "secret_key",
        server.server_json: "server.json",
        server.server_log: "server.log",
        server.start_lock: "start.lock",
        server.runner_log: "runner.log",
        server.database: "db.sqlite",
        server.blobs: "blobs",
        server.uploads: "uploads",
    }
    assert all(path == server.dir / name for path, name in named.items())


def test_server_settings_follow_the_layout(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path)
    files = HomeLayout(tmp_path).server
    assert settings.server_dir == files.dir
    assert settings.resolved_blob_dir() == files.blobs
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{files.database}"
    assert settings.resolved_runner_work_dir() == tmp_path / "runner"
