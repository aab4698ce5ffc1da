"""Cloud runners end to end through the CLI, the in-memory twin as the cloud: a team server
(in a thread of the test, so that the twin is the test's) whose twin boots each instance by
running its user-data script with bash on loopback (`tests/infra/boot.py`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import Env, _stop_server, make_env
from tests.e2e.test_remote import run_name_in
from tests.infra.boot import BootHarness, add_backend, free_port, serve

from dstack.backends.memory import MemoryCompute
from dstack.models.backends import BackendConfig, BackendLimits, BackendType
from dstack.server.settings import ServerSettings

ADMIN_TOKEN = "cloud-e2e-admin-token"
IDLE_TIMEOUT = 3.0


class Cloud:
    def __init__(self, harness: BootHarness) -> None:
        self.twin = MemoryCompute("memory", on_create=harness.boot)
        harness.watch(self.twin)


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Settings of the team server a test changes (by overriding this fixture)."""
    return {}


@pytest.fixture
def cloud(tmp_path: Path, server_settings: dict[str, Any]) -> Iterator[tuple[Cloud, str]]:
    settings = ServerSettings(
        home=tmp_path / "server",
        token=ADMIN_TOKEN,
        port=free_port(),
        secret_key="cloud-e2e-secret",
        scheduler_interval=0.2,
        instance_poll_interval=0.5,
        instance_registration_timeout=60.0,
        **server_settings,
    )
    limits = BackendLimits(max_instances=2, idle_timeout=IDLE_TIMEOUT)
    add_backend(
        settings,
        BackendConfig(name="memory", type=BackendType.MEMORY, region="local", limits=limits),
    )
    harness = BootHarness(tmp_path / "instances")
    cloud = Cloud(harness)
    try:
        with serve(settings, lambda config, credentials: cloud.twin) as url:
            yield cloud, url
    finally:
        harness.stop()


@pytest.fixture
def user(tmp_path: Path, cloud: tuple[Cloud, str]) -> Iterator[Env]:
    (tmp_path / "user").mkdir()
    env = make_env(tmp_path / "user", "process")
    env.extra_env["COLUMNS"] = "250"  # the tables' cells unwrapped
    result = env.dstack("config", "--url", cloud[1], "--token", ADMIN_TOKEN)
    assert result.code == 0, result
    env.workflows(
        """
        workflows:
          - name: train
            provider: bash
            commands:
              - sleep 2
              - echo trained on a cloud runner
            resources:
              cpu: 2
              interruptible: true
        """
    )
    env.commit("workflows")
    try:
        yield env
    finally:
        _stop_server(env.home)


def _ps(env: Env, name: str) -> dict[str, object]:
    result = env.dstack("ps", name, "--json", "--remote")
    assert result.code == 0, result
    data: dict[str, object] = json.loads(result.out)
    return data


def _until(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_job_no_runner_fits_runs_on_a_spot_instance_which_goes_when_idle(
    user: Env, cloud: tuple[Cloud, str]
) -> None:
    twin = cloud[0].twin
    submitted = user.dstack("run", "--remote", "-d", "train")
    assert submitted.code == 0, submitted
    name = run_name_in(submitted.out + submitted.err)

    _until(lambda: _ps(user, name)["status"] == "running", 90, "the job to run")
    runners = user.dstack("runners", "--remote")
    assert runners.code == 0, runners
    [row] = [line.split() for line in runners.out.splitlines() if line.startswith("dstack-")]
    assert row[-6:-3] == ["memory", twin.alive()[0].id, "cpu.small"], runners.out
    assert row[-3:] == ["yes", "$0.030/h", "ready"], runners.out

    _until(lambda: _ps(user, name)["status"] in ("done", "failed"), 60, "the job to end")
    shown = user.dstack("ps", name, "--remote")
    assert shown.code == 0, shown
    [job] = [line.split() for line in shown.out.splitlines() if line.startswith("train")]
    assert job[-4:-1] == ["cpu.small", "spot", "$0.030/h"], shown.out
    assert "cost $" in shown.out, shown.out
    logs = user.dstack("logs", name, "--remote")
    assert "trained on a cloud runner" in logs.out, logs
    run = _ps(user, name)
    assert run["status"] == "done"
    [launch] = twin.launches
    assert (launch.offer.instance_type, launch.offer.spot) == ("cpu.small", True)

    _until(lambda: twin.alive() == [], 30, "the idle instance to be terminated")
    gone = user.dstack("runners", "--remote")
    assert "No runners yet." in gone.out, gone.out
    listed = user.dstack("ps", "--remote")
    assert "$" in listed.out, listed.out  # the run's cost


@pytest.mark.parametrize(
    "server_settings", [{"no_capacity_backoff": 0.5, "no_capacity_timeout": 3.0}]
)
def test_a_job_no_instance_can_be_had_for_says_why_it_waits_then_why_it_failed(
    user: Env, cloud: tuple[Cloud, str]
) -> None:
    twin = cloud[0].twin
    for offer in twin.catalog:
        twin.set_capacity(offer.instance_type, spot=offer.spot, available=False)

    attached = user.dstack("run", "--remote", "train", timeout=90)

    assert attached.code == 1, attached
    lines = attached.err.splitlines()
    # each change the CLI saw (it looks once a second: a short state may pass unseen)
    waiting = [x for x in lines if x.startswith("pending")]
    assert waiting, lines
    assert all(
        re.fullmatch(
            r"pending \(no capacity\) — no capacity \(round \d\): tried cpu\.small \(spot,"
            r" .*\) on memory, .*; trying again in [\d.]+s",
            x,
        )
        or x == "pending (waiting for instance) — looking for a cloud offer"
        # each offer is tried before the round fails (a short state, seen under load)
        or re.fullmatch(
            r"pending \(waiting for instance\) — provisioning \S+ \(spot, .*\) on memory", x
        )
        for x in waiting
    ), lines
    assert not any("register" in x for x in lines), lines
    assert re.fullmatch(
        r"failed \(no capacity\) — no capacity within 3s; offers tried: cpu\.small .*", lines[-1]
    ), lines
    assert twin.alive() == []
