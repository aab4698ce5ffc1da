"""Port forwarding through a real server: `PortForwards` → server → `TunnelAgent` → app."""

from __future__ import annotations

import os
import socket
import threading

import httpx
import pytest
from tests.tunnel.apps import EchoServer, serve_asgi, web_app
from tests.tunnel.forwards import assert_closed, connect, forwarding, recv_exactly
from tests.tunnel.team import ADMIN_TOKEN, REPO_ID, Team
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from dstack.runner.tunnel import TunnelAgent
from dstack.tunnel.client import ForwardTarget, PortForwards

FIRST = ForwardTarget(job_index=0, port_index=0)


def _ws_url(team: Team, run_name: str, job: int = 0, port: int = 0) -> str:
    path = f"/api/runs/{run_name}/jobs/{job}/ports/{port}"
    return team.url.replace("http://", "ws://") + path


def test_bytes_round_trip_both_ways_with_half_close(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            assert recv_exactly(sock, len(payload)) == payload
            sender.join()
            sock.shutdown(socket.SHUT_WR)  # the echo server answers a half-close with one
            assert sock.recv(10) == b""
        with connect(ports[FIRST]) as again:  # each connection gets its own tunnel
            again.sendall(b"ping")
            assert recv_exactly(again, 4) == b"ping"
    assert events.lines == []


def test_http_and_websocket_apps_work_through_the_forward(team: Team, agent: TunnelAgent) -> None:
    with serve_asgi(web_app()) as app_port:
        [job] = team.run_app([app_port])
        with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
            base = f"http://127.0.0.1:{ports[FIRST]}"
            with httpx.Client(base_url=base, timeout=20) as http:
                for name in ("lab", "kernel"):  # a kept-alive connection, used twice
                    assert http.get("/hello", params={"name": name}).json() == {"hello": name}
            with ws_connect(f"ws://127.0.0.1:{ports[FIRST]}/echo", open_timeout=20) as ws:
                for text in ("one", "two"):
                    ws.send(text)
                    assert ws.recv(timeout=20) == f"echo: {text}"
        assert events.lines == []


def test_several_jobs_and_ports_of_one_run(team: Team, agent: TunnelAgent) -> None:
    servers = [EchoServer().start() for _ in range(3)]
    try:
        team.run_app([servers[0].port, servers[1].port], [servers[2].port])
        run_name = team.admin.get("/api/runs").json()[0]["name"]
        targets = [ForwardTarget(0, 0), ForwardTarget(0, 1), ForwardTarget(1, 0)]
        with forwarding(team.url, ADMIN_TOKEN, run_name, *targets) as (ports, _):
            assert len(set(ports.values())) == 3
            for target in targets:
                with connect(ports[target]) as sock:
                    sock.sendall(f"{target}".encode())
                    assert recv_exactly(sock, len(f"{target}")) == f"{target}".encode()
    finally:
        for server in servers:
            server.stop()


def test_without_a_token_the_server_answers_401_and_forwards_nothing(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(_ws_url(team, job.run_name), open_timeout=20)
    assert refused.value.response.status_code == 401
    with forwarding(team.url, "not-a-token", job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            sock.sendall(b"secret")
            assert_closed(sock)
        line = events.wait_for("401")
    label = f"run {job.run_name} job 0 port #0"
    assert line == f"{label}: the server did not accept the token (HTTP 401)"
    assert echo.accepted == 0


def test_a_user_who_may_not_see_the_repository_is_refused(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    outsider = team.create_user("outsider", repos=["github.com/other/repo"])
    member = team.create_user("member", repos=[REPO_ID])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(_ws_url(team, job.run_name), additional_headers=_bearer(outsider))
    assert refused.value.response.status_code == 404
    with forwarding(team.url, outsider, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            assert_closed(sock)
        assert events.wait_for("not found") == (
            f"run '{job.run_name}' not found — see `dstack ps -a`"
        )
    assert echo.accepted == 0
    with (
        forwarding(team.url, member, job.run_name, FIRST) as (ports, _),
        connect(ports[FIRST]) as sock,
    ):
        sock.sendall(b"member")
        assert recv_exactly(sock, 6) == b"member"


def test_a_runner_token_cannot_open_a_users_forward(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    from tests.tunnel.team import RUNNER_TOKEN

    [job] = team.run_app([echo.port])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(_ws_url(team, job.run_name), additional_headers=_bearer(RUNNER_TOKEN))
    assert refused.value.response.status_code == 403


def test_a_port_the_job_does_not_have_is_refused(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    missing = [ForwardTarget(0, 1), ForwardTarget(5, 0)]
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, *missing) as (ports, events):
        for target in missing:
            with connect(ports[target]) as sock:
                assert_closed(sock)
        no_port = events.wait_for("no port")
        assert no_port == f"job 0 of run {job.run_name} has no port #1 (it has 1)"
        assert events.wait_for("no job") == f"run '{job.run_name}' has no job 5"
    assert echo.accepted == 0


def test_the_runner_refuses_a_port_that_is_not_its_jobs(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    team.allowed.clear()  # e.g. the job ended on the runner before the server knew
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            assert_closed(sock)
        line = events.wait_for("not a port")
    label = f"port {echo.port} of run {job.run_name} job 0"
    assert line == f"{label}: port {echo.port} is not a port of a job this runner runs"
    assert echo.accepted == 0


def test_an_app_that_does_not_listen_gives_one_clear_line(team: Team, agent: TunnelAgent) -> None:
    closed = EchoServer()
    port = closed.port
    closed.stop()  # nothing listens there any more
    [job] = team.run_app([port])
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        for _ in range(3):
            with connect(ports[FIRST]) as sock:
                assert_closed(sock)
        line = events.wait_for("not answering")
        assert line == (
            f"port {port} of run {job.run_name} job 0: "
            "the app is not answering (connection refused on the runner)"
        )
        assert events.lines == [line]  # repeated failures are reported once


def test_when_the_app_dies_the_local_connection_closes_with_a_message(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            sock.sendall(b"hello")
            assert recv_exactly(sock, 5) == b"hello"
            echo.reset_all()
            assert_closed(sock)
        line = events.wait_for("broke off")
    assert line.startswith(f"port {echo.port} of run {job.run_name} job 0: the app broke off")


def test_a_finished_job_is_not_reachable(team: Team, agent: TunnelAgent, echo: EchoServer) -> None:
    [job] = team.run_app([echo.port])
    team.finish(job)
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            assert_closed(sock)
        line = events.wait_for("only while it runs")
    assert line == (
        f"job 0 of run {job.run_name} is done; its ports are reachable only while it runs"
        f" — see `dstack ps {job.run_name}`"
    )


def test_without_the_runners_tunnel_the_user_is_told(team: Team, echo: EchoServer) -> None:
    [job] = team.run_app([echo.port])  # no agent connected
    with forwarding(team.url, ADMIN_TOKEN, job.run_name, FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            assert_closed(sock)
        line = events.wait_for("no tunnel connection")
    assert line.startswith(
        f"port {echo.port} of run {job.run_name} job 0: "
        "the runner has no tunnel connection to this server — "
    )


def test_an_unreachable_server_is_reported(echo: EchoServer) -> None:
    closed = EchoServer()
    url = f"http://127.0.0.1:{closed.port}"
    closed.stop()
    with forwarding(url, ADMIN_TOKEN, "clever-fox-1", FIRST) as (ports, events):
        with connect(ports[FIRST]) as sock:
            assert_closed(sock)
        line = events.wait_for("cannot reach")
    assert line.startswith(f"run clever-fox-1 job 0 port #0: cannot reach the server at {url}")


def test_close_ends_open_connections_and_frees_the_local_ports(
    team: Team, agent: TunnelAgent, echo: EchoServer
) -> None:
    [job] = team.run_app([echo.port])
    forwards = PortForwards(team.url, ADMIN_TOKEN, job.run_name, [FIRST])
    port = forwards.start()[FIRST]
    sock = connect(port)
    try:
        sock.sendall(b"still here")
        assert recv_exactly(sock, 10) == b"still here"
        forwards.close()
        assert_closed(sock)
    finally:
        sock.close()
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    forwards.close()  # idempotent


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
