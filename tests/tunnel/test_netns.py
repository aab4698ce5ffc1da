"""A runner on another "host": the app listens on 127.0.0.1 inside a network namespace that
only dials out; the user reaches it from the host through the tunnel and nothing else."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.infra.netns import NetNs, netns
from tests.tunnel.forwards import assert_closed, connect, forwarding, recv_exactly
from tests.tunnel.team import ADMIN_TOKEN, Team, team_server

from dstack.tunnel.client import ForwardTarget

__all__ = ["netns"]  # the fixture

FIRST = ForwardTarget(job_index=0, port_index=0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def remote_team(netns: NetNs, tmp_path: Path) -> Iterator[Team]:
    with team_server(tmp_path / "home", host=netns.host_ip) as team:
        yield team


@pytest.fixture
def ns_side(netns: NetNs, remote_team: Team) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The agent and the echo app, inside the namespace; (process, the app's port)."""
    script = str(Path(__file__).with_name("ns_side.py"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = netns.popen(
        [
            sys.executable,
            script,
            remote_team.url,
            remote_team.runner.credential,
            remote_team.runner_id,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "connected"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_an_app_inside_another_network_is_reachable_only_through_the_tunnel(
    netns: NetNs, remote_team: Team, ns_side: tuple[subprocess.Popen[str], int]
) -> None:
    proc, app_port = ns_side
    for address in ("127.0.0.1", netns.ns_ip):  # the host cannot reach the app itself
        with pytest.raises((ConnectionRefusedError, TimeoutError)):
            socket.create_connection((address, app_port), timeout=3).close()
    [job] = remote_team.run_app([app_port])
    with forwarding(remote_team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            payload = os.urandom(512 * 1024)
            sock.sendall(payload)
            assert recv_exactly(sock, len(payload)) == payload
            # The runner's machine dies: the connection ends, and the user is told why.
            os.kill(proc.pid, signal.SIGKILL)
            assert_closed(sock)
        line = events.wait_for("went away")
    assert line == (
        f"port {app_port} of run {job.run_name} job 0: "
        "the runner went away (its connection was lost)"
    )
