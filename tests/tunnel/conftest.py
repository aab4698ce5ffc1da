from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.tunnel.apps import EchoServer
from tests.tunnel.team import Team, team_server

from dstack.runner.tunnel import TunnelAgent


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    with team_server(tmp_path / "home") as server:
        yield server


@pytest.fixture
def agent(team: Team) -> Iterator[TunnelAgent]:
    credential = team.runner.credential  # the runner's own, as the daemon's agent uses
    tunnel = TunnelAgent(team.url, credential, team.runner_id, allowed=team.allowed)
    tunnel.start()
    try:
        assert tunnel.wait_connected(15), "the agent did not connect to the server"
        yield tunnel
    finally:
        tunnel.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    try:
        yield server
    finally:
        server.stop()
