"""Multi-node runs end to end: two real runners on two network "hosts" — one on this machine's
own network, one inside a network namespace — joined by a veth pair, with the team server on
the host's end of the pair (reachable from both). Each runner finds its own address (the
source address of its route to the server), so the nodes reach each other only through the
addresses the runners reported.

A 2-node job does a real collective over TCP using only the variables dstack sets: rank 0
listens on MASTER_ADDR:MASTER_PORT, every rank sends its number, every rank prints the sum.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import TEST_IMAGE, Env, _stop_server, make_env
from tests.e2e.remote_helpers import (
    ADMIN_TOKEN,
    RunnerProcess,
    TeamServer,
    online_runners,
    wait_until,
)
from tests.e2e.test_remote import _remote_run, _wait
from tests.infra.netns import NetNs, netns

__all__ = ["netns"]  # the fixture

SUM = """\
import os, socket, sys, time

rank = int(os.environ["NODE_RANK"])
nodes = int(os.environ["DSTACK_NODES_NUM"])
assert rank == int(os.environ["DSTACK_NODE_RANK"])
assert int(os.environ["WORLD_SIZE"]) == nodes
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
assert addr == os.environ["DSTACK_MASTER_NODE_IP"]
value = rank + 1
print(f"rank {rank} of {nodes}, master {addr}:{port}", flush=True)
if rank == 0:
    with socket.create_server((addr, port)) as server:
        total, peers = value, []
        while len(peers) < nodes - 1:
            conn, _ = server.accept()
            total += int(conn.recv(64).decode())
            peers.append(conn)
        for conn in peers:
            conn.sendall(str(total).encode())
            conn.close()
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.sendall(str(value).encode())
    total = int(conn.recv(64).decode())
print(f"rank {rank}: sum {total}", flush=True)
"""

# Node 1 writes its pid where the test finds it, then waits; node 0 waits to be stopped.
HANG = """\
import os, pathlib, time

rank = int(os.environ["NODE_RANK"])
if rank == 1:
    pathlib.Path({pid_file!r}).write_text(str(os.getpid()))
print(f"rank {{rank}} waiting", flush=True)
time.sleep(600)
"""


@pytest.fixture
def two_hosts(
    netns: NetNs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TeamServer, NetNs]]:
    """The server on the host's end of the pair; runner `n-host` on the host, runner `n-ns`
    in the namespace; each with one CPU slot so that each takes one node."""
    monkeypatch.setenv("DSTACK_RUNNER_JOB_USER", "root")
    server = TeamServer(home=tmp_path / "server-home", host=netns.host_ip)
    runners = [
        RunnerProcess("n-host", tmp_path / "runners" / "n-host", server),
        RunnerProcess("n-ns", tmp_path / "runners" / "n-ns", server, launcher=netns.command),
    ]
    try:
        server.start()
        for runner in runners:
            runner.start()
        wait_until(lambda: {"n-host", "n-ns"} <= online_runners(server), 30, "both runners online")
        yield server, netns
    finally:
        for runner in runners:
            runner.stop()
        server.stop()


@pytest.fixture
def user(tmp_path: Path, two_hosts: tuple[TeamServer, NetNs]) -> Iterator[Env]:
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    result = env.dstack("config", "--url", two_hosts[0].url, "--token", ADMIN_TOKEN)
    assert result.code == 0, result
    try:
        yield env
    finally:
        _stop_server(env.home)


def _runner_addresses(server: TeamServer) -> dict[str, str | None]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answer = httpx.get(f"{server.url}/api/runners", headers=headers, timeout=5)
    return {r["name"]: r.get("address") for r in answer.json()}


def _workflow(user: Env, name: str, script: str) -> None:
    user.write(f"{name}.py", script)
    user.workflows(
        f"""
        workflows:
          - name: {name}
            provider: bash
            nodes: 2
            commands:
              - python3 {name}.py
              - mkdir -p out && echo $DSTACK_NODE_RANK > out/node-$DSTACK_NODE_RANK.txt
            artifacts: [out]
            resources:
              cpu: 1
        """
    )
    user.commit(name)


def test_two_nodes_sum_over_tcp_with_the_variables_dstack_sets(
    user: Env, two_hosts: tuple[TeamServer, NetNs]
) -> None:
    server, ns = two_hosts
    assert _runner_addresses(server) == {"n-host": ns.host_ip, "n-ns": ns.ns_ip}
    _workflow(user, "allsum", SUM)

    plan = user.dstack("plan", "allsum", "--json")
    assert plan.code == 0, plan
    jobs = json.loads(plan.out)["jobs"]
    assert [j["spec"]["node_rank"] for j in jobs] == [0, 1]

    name = _remote_run(user, "allsum")
    run = _wait(user, name, {"done", "failed", "stopped"}, timeout=120)
    assert run["status"] == "done", run
    placed = {j["runner_name"] for j in run["jobs"]}  # type: ignore[attr-defined]
    assert placed == {"n-host", "n-ns"}

    logs = user.dstack("logs", name, "--remote")
    assert logs.code == 0, logs
    sums = re.findall(r"^\[node (\d)\] rank (\d): sum (\d+)$", logs.out, re.MULTILINE)
    assert sorted(sums) == [("0", "0", "3"), ("1", "1", "3")], logs.out
    masters = set(re.findall(r"master (\S+):(\d+)", logs.out))
    assert {address for address, _ in masters} <= {ns.host_ip, ns.ns_ip}
    assert len(masters) == 1, logs.out

    # Each node keeps its own artifacts, also in a run that reused the whole gang.
    again = _remote_run(user, "allsum")
    reused = _wait(user, again, {"done", "failed", "stopped"}, timeout=120)
    assert reused["status"] == "done", reused
    assert [j["reused_from"] for j in reused["jobs"]] == [name, name]  # type: ignore[attr-defined]
    for run_name in (name, again):
        for node in (0, 1):
            listed = user.dstack("ls", run_name, "--node", str(node), "-r", "--remote")
            assert listed.code == 0, listed
            assert f"node-{node}.txt" in listed.out, listed.out
            assert f"node-{1 - node}.txt" not in listed.out, listed.out


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder both runners' jobs (root) and the test see."""
    folder = Path(tempfile.mkdtemp(prefix="dstack-nodes-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_node_killed_mid_run_stops_the_other_and_the_run_names_it(
    user: Env, shared: Path
) -> None:
    pid_file = shared / "node1.pid"
    _workflow(user, "hang", HANG.format(pid_file=str(pid_file)))
    name = _remote_run(user, "hang")
    wait_until(pid_file.exists, 120, "node 1 started")
    time.sleep(0.5)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    run = _wait(user, name, {"done", "failed", "stopped"}, timeout=120)
    assert run["status"] == "failed", run
    jobs: list[dict[str, str]] = run["jobs"]  # type: ignore[assignment]
    node0, node1 = jobs
    assert node1["status"] == "failed", node1
    assert node0["status"] == "stopped", node0
    assert node0["reason"] == "node_failed", node0
    assert re.fullmatch(r"node 1 failed: exit code \d+", node0["message"]), node0
    shown = user.dstack("ps", name, "--remote")
    assert "node 1 failed: exit code" in shown.out, shown.out


@pytest.fixture
def docker_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TeamServer]:
    """Two Docker runners on this machine: a container of a multi-node job shares the host's
    network, so node 1 reaches node 0 at MASTER_ADDR (without it, each container's 127.0.0.1
    would be its own)."""
    monkeypatch.setenv("DSTACK_DEFAULT_IMAGE", TEST_IMAGE)
    server = TeamServer(home=tmp_path / "server-home")
    runners = [
        RunnerProcess(n, tmp_path / "runners" / n, server, extra_args=["--executor", "docker"])
        for n in ("d0", "d1")
    ]
    try:
        server.start()
        for runner in runners:
            runner.start()
        wait_until(lambda: {"d0", "d1"} <= online_runners(server), 60, "both runners online")
        yield server
    finally:
        for runner in runners:
            runner.stop()
        server.stop()


@pytest.mark.docker
def test_two_docker_nodes_sum_over_the_host_network(
    tmp_path: Path, docker_pair: TeamServer
) -> None:
    (tmp_path / "user").mkdir()
    user = make_env(tmp_path / "user", "docker")
    try:
        assert user.dstack("config", "--url", docker_pair.url, "--token", ADMIN_TOKEN).code == 0
        _workflow(user, "allsum", SUM)
        name = _remote_run(user, "allsum")
        run = _wait(user, name, {"done", "failed", "stopped"}, timeout=180)
        assert run["status"] == "done", run
        logs = user.dstack("logs", name, "--remote").out
        sums = re.findall(r"^\[node (\d)\] rank (\d): sum (\d+)$", logs, re.MULTILINE)
        assert sorted(sums) == [("0", "0", "3"), ("1", "1", "3")], logs
    finally:
        _stop_server(user.home)
