"""`dstack ui`: a one-time sign-in link to the local server's web UI."""

from __future__ import annotations

import re
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from dstack.cli.main import cli
from dstack.server.local import stop_local_server


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    try:
        yield home
    finally:
        stop_local_server(home)


def invoke(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"DSTACK_HOME": str(home)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_the_link_signs_in_once(home: Path) -> None:
    code, output = invoke(home, "ui", "--no-browser")
    assert code == 0, output
    found = re.search(r"(http://\S+/signin/code\?code=\S+)", output)
    assert found is not None, output
    link = found.group(1)
    with httpx.Client() as browser:
        first = browser.get(link)
        assert first.status_code == 303
        assert "dstack_session" in first.cookies
        page = browser.get(link.split("/signin")[0] + "/")  # the cookie it was given
        assert page.status_code == 200
        assert "<h1>Runs</h1>" in page.text
    with httpx.Client() as other:
        assert other.get(link).status_code == 401  # used


def test_opens_the_browser_or_prints_the_link(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def fake_open(url: str, new: int = 0) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    code, output = invoke(home, "ui")
    assert code == 0, output
    assert len(opened) == 1
    assert "/signin/code?code=" in opened[0]
    assert "Opened the web UI" in output

    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: False)
    code, output = invoke(home, "ui")
    assert (code, "Open this link within a minute" in output) == (0, True)
