"""Cloud runners end to end through the CLI, with AWS's API as `moto_server`.

An admin adds an AWS backend (`dstack backends add aws --endpoint-url MOTO ...`) to a team
server whose `--public-url` is its loopback URL; users submit with `dstack run --remote`.
The server creates instances in moto's EC2, and `BootHarness` (tests/backends/harness.py)
"boots" each one: its user-data script runs with bash on loopback (`dstack-runner` of this
checkout on PATH, the process executor, jobs as the runner's own user), and is killed when
EC2 says the instance is terminated. What is asserted is what a user sees: the CLI's output,
and the instances in EC2 (`describe_instances`: type, market, tags, state).

The server runs in a thread of the test (`tests/infra/boot.serve`, as in
test_cloud_memory.py) with short timeouts in its settings, so that its Compute factory can be
the test's: `make_compute`'s `AwsCompute`, whose boto3 client carries one test-only hook.
moto never runs out of capacity, and no AWS call can make it; so `Capacity` answers
`RunInstances` of the instance types a test names as EC2 does when it has none, instead of
sending it: HTTP 500 with EC2's XML error `InsufficientInstanceCapacity`, which botocore
parses (and retries) as it would AWS's. The hook is reachable only through the factory a
test hands to `create_app`: no setting, variable or option of the product turns it on.

A spot interruption is posted on the instance's own fake metadata service
(`BootHarness.interrupt`), which its runner watches (the user data points it at EC2's, the
harness at its own): the interrupted job resumes from its checkpoint on a new spot instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from tests.backends.harness import BootHarness
from tests.e2e.conftest import Env, Result, make_env
from tests.e2e.test_remote import run_name_in
from tests.infra.boot import free_port, serve
from tests.infra.fixtures import moto_ec2, moto_s3
from tests.infra.moto import MotoServer

from dstack.backends.base import Compute
from dstack.backends.registry import make_compute
from dstack.models.backends import BackendConfig, BackendCredentials, BackendType
from dstack.server.app import running_context
from dstack.server.services import runners as runner_service
from dstack.server.services.instances import BACKEND_TAG, NAME_TAG, SERVER_TAG
from dstack.server.settings import ServerSettings
from dstack.storage.memory import MemoryBlobStore

__all__ = ["moto_ec2", "moto_s3"]  # fixtures

pytestmark = pytest.mark.ec2

ADMIN_TOKEN = "cloud-aws-e2e-admin-token"
# For `resources: {cpu: 2}` the catalog's cheapest types in us-east-1.
CHEAPEST, NEXT = "t3.medium", "t3.large"

_NO_CAPACITY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    "<Code>InsufficientInstanceCapacity</Code><Message>We currently do not have sufficient "
    "{type} capacity in the Availability Zone you requested (us-east-1a).</Message>"
    "</Error></Errors><RequestID>{request}</RequestID></Response>"
)


class Capacity:
    """The server's Compute factory: AWS backends as the product builds them, except that
    `RunInstances` of a type in `exhausted` is answered `InsufficientInstanceCapacity`
    (HTTP 500, EC2's XML) before it leaves botocore; `refused` lists those answered."""

    def __init__(self) -> None:
        self.exhausted: set[str] = set()
        self.refused: list[str] = []
        self.clients: list[Any] = []  # closed by the test
        self._lock = threading.Lock()

    def __call__(self, config: BackendConfig, credentials: BackendCredentials) -> Compute:
        if config.type is not BackendType.AWS:
            return make_compute(config, credentials)
        from dstack.backends.aws.compute import AwsCompute, make_client

        client = make_client(config, credentials)
        client.meta.events.register("before-send.ec2.RunInstances", self._answer)
        self.clients.append(client)
        return AwsCompute(config, credentials, client=client)

    def _answer(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        (instance_type,) = parse_qs(body or "").get("InstanceType", [""])
        if instance_type not in self.exhausted:
            return None  # sent to moto
        with self._lock:
            self.refused.append(instance_type)
        xml = _NO_CAPACITY.format(type=instance_type, request=uuid.uuid4())
        return AWSResponse(request.url, 500, {"Content-Type": "text/xml"}, _Raw(xml.encode()))


class _Raw:
    """The raw body botocore reads from a response."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


@dataclass
class Team:
    """A user (admin) at a terminal, the team server, moto's EC2 and the boot harness."""

    user: Env
    url: str
    moto: MotoServer
    ec2: Any
    harness: BootHarness
    capacity: Capacity
    server_id: str
    go: Path  # jobs that wait for it run until the test creates it
    database: Path  # the server's SQLite file, read by the test

    def instance_rows(self) -> list[tuple[str, str, str | None]]:
        """The server's instances (name, state, reason), oldest first."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT name, state, reason FROM instances ORDER BY created_at")
            return [(name, state, reason) for name, state, reason in rows]

    def dstack(self, *args: str) -> Result:
        return self.user.dstack(*args)

    def add_aws(self, *args: str) -> None:
        added = self.dstack(
            "backends", "add", "aws", "--region", "us-east-1",
            "--endpoint-url", self.moto.endpoint,
            "--access-key-id", "testing", "--secret-access-key", "testing",
            *args, "--remote",
        )  # fmt: skip
        assert added.code == 0, added

    def submit(self, workflow: str) -> str:
        submitted = self.dstack("run", "--remote", "-d", workflow)
        assert submitted.code == 0, submitted
        return run_name_in(submitted.out + submitted.err)

    def ps(self, name: str) -> dict[str, Any]:
        result = self.dstack("ps", name, "--json", "--remote")
        assert result.code == 0, result
        data: dict[str, Any] = json.loads(result.out)
        return data

    def job(self, name: str) -> dict[str, Any]:
        (job,) = self.ps(name)["jobs"]
        return dict(job)

    def instances(self) -> list[dict[str, Any]]:
        """This server's instances in EC2 (terminated ones too)."""
        filters = [{"Name": f"tag:{SERVER_TAG}", "Values": [self.server_id]}]
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        return found

    def alive(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if i["State"]["Name"] in ("pending", "running")]


def until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def settled(team: Team, name: str, timeout: float = 90) -> dict[str, Any]:
    until(lambda: team.ps(name)["status"] in ("done", "failed", "stopped"), timeout, name)
    return team.ps(name)


WORKFLOWS = """
workflows:
  - name: train
    provider: bash
    commands:
      - while [ ! -e {go} ]; do sleep 0.1; done
      - echo trained on a cloud runner
    resources:
      cpu: 2
  - name: train-large
    provider: bash
    commands:
      - echo trained on a t3.large
    resources:
      cpu: 2
    labels:
      instance-type: t3.large
  - name: train-spot
    provider: bash
    commands:
      - echo trained on a spot instance
    resources:
      cpu: 2
      interruptible: true
  - name: epochs
    provider: bash
    commands:
      - python3 train.py
    artifacts: [ckpt]
    resources:
      cpu: 2
      interruptible: true
"""

# Counts epochs from the checkpoint in its artifact folder. The first attempt (from 0) waits
# at epoch 2 while the hold file exists, so the interruption comes at a known epoch and the
# job cannot end before it; the second attempt starts from the checkpoint and runs to 8.
TRAIN = """\
import pathlib, time

checkpoint = pathlib.Path("ckpt/epoch.txt")
hold = pathlib.Path({hold!r})
start = int(checkpoint.read_text()) if checkpoint.exists() else 0
print(f"starting at epoch {{start}}", flush=True)
checkpoint.parent.mkdir(exist_ok=True)
for epoch in range(start + 1, 9):
    time.sleep(0.2)
    checkpoint.write_text(str(epoch))
    print(f"epoch {{epoch}}", flush=True)
    while start == 0 and epoch >= 2 and hold.exists():
        time.sleep(0.1)
"""


@pytest.fixture
def team(tmp_path: Path, moto_ec2: MotoServer) -> Iterator[Team]:
    port = free_port()
    settings = ServerSettings(
        home=tmp_path / "server",
        token=ADMIN_TOKEN,
        port=port,
        public_url=f"http://127.0.0.1:{port}",  # what `dstack server --public-url` sets
        secret_key="cloud-aws-e2e-secret",
        scheduler_interval=0.2,
        instance_poll_interval=0.5,
        instance_registration_timeout=60.0,
        no_capacity_backoff=1.0,
    )
    server_id = asyncio.run(_server_id(settings))
    (tmp_path / "user").mkdir()
    user = make_env(tmp_path / "user", "process")
    user.extra_env["COLUMNS"] = "250"  # the tables' cells unwrapped
    go = tmp_path / "go"
    user.workflows(WORKFLOWS.format(go=go))
    user.commit("workflows")
    boot_env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # this checkout's runner
        DOCKER_HOST="unix:///nonexistent/docker.sock",  # no engine: the process executor
        DSTACK_RUNNER_JOB_USER=getpass.getuser(),  # jobs run as the runner's own user
    )
    ec2 = moto_ec2.ec2_client()
    harness = BootHarness(
        ec2, root=tmp_path / "instances", env=boot_env, tags={SERVER_TAG: server_id}
    )
    team = Team(
        user, settings.url, moto_ec2, ec2, harness, Capacity(), server_id, go,
        settings.files.database,
    )  # fmt: skip
    try:
        with serve(settings, team.capacity), harness:
            configured = user.dstack("config", "--url", settings.url, "--token", ADMIN_TOKEN)
            assert configured.code == 0, configured
            yield team
        assert harness.errors == []
    finally:
        leftovers = [i["InstanceId"] for i in team.alive()]
        if leftovers:  # a failed test's: never booted by a later one (other server id)
            ec2.terminate_instances(InstanceIds=leftovers)
        for client in team.capacity.clients:
            client.close()
        ec2.close()


async def _server_id(settings: ServerSettings) -> str:
    """Migrate the server's database and make its id (which tags its instances)."""
    async with running_context(settings, blobs=MemoryBlobStore(), background=False) as ctx:
        return await runner_service.server_id(ctx)


def test_a_job_no_runner_fits_gets_an_on_demand_instance_which_goes_when_idle(
    team: Team,
) -> None:
    team.add_aws("--idle-timeout", "2s")
    name = team.submit("train")

    until(lambda: team.job(name)["status"] == "running", 90, "the job to run")
    (instance,) = team.instances()
    assert instance["InstanceType"] == CHEAPEST
    assert "InstanceLifecycle" not in instance  # on-demand
    assert tags(instance) == {
        "Name": team.job(name)["instance"]["name"],
        SERVER_TAG: team.server_id,
        NAME_TAG: team.job(name)["instance"]["name"],
        BACKEND_TAG: "aws",
    }
    runners = team.dstack("runners", "--remote")
    assert runners.code == 0, runners
    [row] = [line.split() for line in runners.out.splitlines() if line.startswith("dstack-")]
    assert row[-6:] == ["aws", instance["InstanceId"], CHEAPEST, "no", "$0.042/h", "ready"], (
        runners.out
    )

    team.go.touch()
    assert settled(team, name)["status"] == "done"
    shown = team.dstack("ps", name, "--remote")
    [job] = [line.split() for line in shown.out.splitlines() if line.startswith("train")]
    assert job[-4:-1] == [CHEAPEST, "on-demand", "$0.042/h"], shown.out
    assert "cost $" in shown.out, shown.out
    assert team.ps(name)["cost"] > 0
    logs = team.dstack("logs", name, "--remote")
    assert "trained on a cloud runner" in logs.out, logs

    until(lambda: team.alive() == [], 30, "the idle instance to be terminated")
    (gone,) = team.instances()
    assert gone["State"]["Name"] == "terminated"
    assert "No runners yet." in team.dstack("runners", "--remote").out
    assert team.harness.instances[gone["InstanceId"]].killed


def test_an_interruptible_job_gets_a_spot_instance(team: Team) -> None:
    team.add_aws("--idle-timeout", "1m")
    name = team.submit("train-spot")

    assert settled(team, name)["status"] == "done"
    (instance,) = team.instances()
    assert instance["InstanceType"] == CHEAPEST
    assert instance["InstanceLifecycle"] == "spot"
    shown = team.dstack("ps", name, "--remote")
    [job] = [line.split() for line in shown.out.splitlines() if line.startswith("train")]
    assert job[-4:-1] == [CHEAPEST, "spot", "$0.013/h"], shown.out
    assert "trained on a spot instance" in team.dstack("logs", name, "--remote").out


def test_stop_terminates_an_instance_still_booting(team: Team) -> None:
    team.add_aws()
    team.harness.hold()  # the instance runs in EC2, its runner never starts
    name = team.submit("train")

    until(lambda: team.alive(), 60, "the instance to be created")
    (instance,) = team.alive()
    assert team.job(name)["status"] == "pending"
    assert team.job(name)["instance"]["instance_type"] == CHEAPEST
    stopped = team.dstack("stop", name, "--remote")
    assert stopped.code == 0, stopped

    until(lambda: team.alive() == [], 30, "the instance to be terminated")
    (gone,) = team.instances()
    assert (gone["InstanceId"], gone["State"]["Name"]) == (instance["InstanceId"], "terminated")
    assert team.ps(name)["status"] == "stopped"
    assert team.harness.instances == {}  # never booted


def test_a_capacity_error_moves_to_the_next_offer(team: Team) -> None:
    team.add_aws("--idle-timeout", "1m")
    team.capacity.exhausted.add(CHEAPEST)
    name = team.submit("train")
    team.go.touch()

    assert settled(team, name)["status"] == "done"
    assert set(team.capacity.refused) == {CHEAPEST}  # botocore retried it: one type
    (instance,) = team.instances()  # the refused launch created nothing
    assert instance["InstanceType"] == NEXT
    shown = team.dstack("ps", name, "--remote")
    [job] = [line.split() for line in shown.out.splitlines() if line.startswith("train")]
    assert job[-4:-2] == [NEXT, "on-demand"], shown.out


def test_max_instances_makes_a_job_wait_for_the_instance_to_go(team: Team) -> None:
    team.add_aws("--max-instances", "1", "--idle-timeout", "1s")
    first = team.submit("train")
    until(lambda: team.job(first)["status"] == "running", 90, "the first job to run")
    # Its labels rule out the first one's runner: it needs an instance of its own.
    second = team.submit("train-large")

    until(lambda: "instance limit" in (team.job(second)["message"] or ""), 30, "the wait")
    waiting = team.job(second)
    assert (waiting["status"], waiting["reason"]) == ("pending", "waiting_for_instance")
    assert "aws (1)" in waiting["message"], waiting["message"]
    (only,) = team.instances()
    assert only["InstanceType"] == CHEAPEST

    team.go.touch()
    assert settled(team, first)["status"] == "done"
    assert settled(team, second)["status"] == "done"
    launched = {i["InstanceId"]: i for i in team.instances()}
    assert launched.pop(only["InstanceId"])["State"]["Name"] == "terminated"
    (new,) = launched.values()
    assert new["InstanceType"] == NEXT
    assert team.job(second)["instance"]["instance_type"] == NEXT


def test_max_price_below_every_offer_fails_the_job_naming_the_limit(team: Team) -> None:
    team.add_aws("--max-price", "0.01")
    name = team.submit("train")

    run = settled(team, name, timeout=30)
    (job,) = run["jobs"]
    assert (run["status"], job["reason"]) == ("failed", "no_capacity")
    assert "over its backend's max price (aws $0.010/h)" in job["message"], job["message"]
    assert f"the cheapest: {CHEAPEST} (on-demand, $0.042/h) on aws" in job["message"]
    assert team.instances() == []
    shown = team.dstack("ps", name, "--remote")
    assert "no capacity" in shown.out, shown.out


def _epochs(text: str, pattern: str = r"^epoch (\d+)$") -> list[int]:
    return [int(n) for n in re.findall(pattern, text, re.MULTILINE)]


def test_an_interrupted_spot_job_resumes_from_its_checkpoint_on_a_new_instance(
    team: Team, tmp_path: Path
) -> None:
    team.add_aws("--max-instances", "1", "--idle-timeout", "10m")
    hold = tmp_path / "hold"
    hold.touch()
    team.user.write("train.py", TRAIN.format(hold=str(hold)))
    team.user.commit("train")
    name = team.submit("epochs")

    def logs() -> str:
        return team.dstack("logs", name, "--remote").out

    until(lambda: 2 in _epochs(logs()), 90, "epoch 2 on the first instance")
    (first,) = team.instances()
    assert (first["InstanceType"], first["InstanceLifecycle"]) == (CHEAPEST, "spot")
    booted = team.harness.instances[first["InstanceId"]]
    # EC2's metadata service in its user data; the harness's own in the environment wins.
    assert "export DSTACK_RUNNER_METADATA_URL=http://169.254.169.254" in booted.user_data
    notice = "/latest/meta-data/spot/instance-action"
    until(lambda: notice in booted.metadata.requests, 30, "the runner to watch for a notice")

    team.harness.interrupt(first["InstanceId"])
    # The server terminates the instance its runner handed the job back from (EC2 would
    # two minutes after the notice), which frees the backend's only slot for a new one.
    until(lambda: len(team.instances()) == 2, 60, "a second instance")
    assert settled(team, name, timeout=120)["status"] == "done"

    gone, second = sorted(team.instances(), key=lambda i: i["LaunchTime"])
    assert (gone["InstanceId"], gone["State"]["Name"]) == (first["InstanceId"], "terminated")
    assert (second["InstanceType"], second["InstanceLifecycle"]) == (CHEAPEST, "spot")
    assert second["State"]["Name"] == "running"  # idle, until its timeout
    first_name, second_name = tags(gone)[NAME_TAG], tags(second)[NAME_TAG]
    assert team.instance_rows() == [
        (first_name, "terminated", "its runner reported a spot interruption"),
        (second_name, "ready", None),
    ]
    assert booted.killed

    text = logs()
    assert _epochs(text, r"^starting at epoch (\d+)$") == [0, 2], text  # from the checkpoint
    assert _epochs(text) == list(range(1, 9)), text  # no epoch ran twice
    target = tmp_path / "got"
    copied = team.dstack("cp", name, "ckpt", str(target), "--remote")
    assert copied.code == 0, copied
    assert (target / "epoch.txt").read_text() == "8"

    job = team.job(name)
    assert (job["attempt"], job["instance"]["name"]) == (1, second_name)
    shown = team.dstack("ps", name, "--remote")
    assert shown.code == 0, shown
    rows = [line.split() for line in shown.out.splitlines()]
    attempts = [row[1:3] for row in rows if len(row) > 2 and row[0] == "epochs" and row[1] in "12"]
    assert attempts == [["1", first_name], ["2", second_name]], shown.out
    assert "re-queued (interrupted)" in shown.out, shown.out
    assert "epochs #1: spot instance interrupted: terminate" in shown.out, shown.out
