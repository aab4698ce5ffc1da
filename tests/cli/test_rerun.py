"""`dstack rerun RUN`: the local server submits the run again, as it was submitted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.ui.helpers import submission

from dstack.api.client import Client
from dstack.cli.main import cli
from dstack.server.local import stop_local_server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("DSTACK_HOME", str(home))
    try:
        yield home
    finally:
        stop_local_server(home)


def test_rerun_prints_the_new_run(home: Path) -> None:
    from dstack.cli.context import local_server

    url, token = local_server()
    with Client(url, token) as client:
        original = client.submit_run(submission("github.com/acme/a"))
        client.stop_run(original.name)  # its jobs never start here

        result = CliRunner().invoke(cli, ["rerun", original.name])
        assert result.exit_code == 0, result.output
        new = result.output.split()[0]
        assert f"a re-run of {original.name}" in result.output
        again = client.get_run(new)
        assert [j.spec for j in again.jobs] == [j.spec for j in original.jobs]

        missing = CliRunner().invoke(cli, ["rerun", "nope-1"])
        assert missing.exit_code != 0
        assert "Traceback" not in missing.output
