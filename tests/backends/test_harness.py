"""The boot harness itself: it boots what EC2 (moto) runs with the tags, with the
environment and metadata it promises, and kills what EC2 terminates."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.infra.moto import MotoServer

from .harness import METADATA_URL_ENV, TOKEN_HEADER, TOKEN_TTL_HEADER, BootHarness

pytestmark = pytest.mark.ec2

SCRIPT = f"""#!/bin/bash
echo "${{{METADATA_URL_ENV}}}" > metadata-url
echo "$DSTACK_HOME" > home
echo "$MARK" > mark
sleep 600
"""


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)


def _alive_in_group(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def ec2(moto_ec2: MotoServer) -> Iterator[object]:
    client = moto_ec2.ec2_client()
    yield client
    client.close()


def run(ec2, tags: dict[str, str], user_data: str = SCRIPT) -> str:
    reply = ec2.run_instances(
        ImageId="ami-0123456789abcdef0",
        InstanceType="g4dn.xlarge",
        MinCount=1,
        MaxCount=1,
        UserData=user_data,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )
    return str(reply["Instances"][0]["InstanceId"])


@pytest.fixture
def tags() -> dict[str, str]:
    return {"harness-test": uuid.uuid4().hex}


def test_boots_tagged_instances_with_their_environment(
    moto_ec2: MotoServer, ec2, tags: dict[str, str], tmp_path: Path
) -> None:
    other = run(ec2, {"harness-test": "someone-else"})
    env = {"MARK": "given", "PATH": "/usr/bin:/bin"}
    with BootHarness(moto_ec2.endpoint, root=tmp_path, env=env, tags=tags) as harness:
        instance_id = run(ec2, tags)
        (booted,) = harness.wait_for(1)
        assert booted.instance_id == instance_id
        eventually(lambda: (booted.workdir / "mark").exists())
        assert (booted.workdir / "mark").read_text() == "given\n"
        assert (booted.workdir / "home").read_text() == f"{booted.home}\n"
        assert (booted.workdir / "metadata-url").read_text() == f"{booted.metadata.url}\n"
        assert booted.user_data == SCRIPT
        assert booted.returncode is None  # still sleeping
        assert other not in harness.instances
        assert harness.errors == []
    assert booted.returncode is not None  # leaving the block killed it
    ec2.terminate_instances(InstanceIds=[instance_id, other])


def test_a_terminated_instance_is_killed(ec2, tags: dict[str, str], tmp_path: Path) -> None:
    with BootHarness(ec2, root=tmp_path, tags=tags) as harness:
        first, second = run(ec2, tags), run(ec2, tags)
        booted = {b.instance_id: b for b in harness.wait_for(2)}
        ec2.terminate_instances(InstanceIds=[first])
        eventually(lambda: booted[first].returncode is not None)
        assert booted[first].returncode == -15  # SIGTERM to its process group
        # its `sleep` went with it (an orphan's zombie may wait for a reaper: not alive)
        eventually(lambda: not _alive_in_group(booted[first].process.pid))
        assert booted[second].returncode is None
    ec2.terminate_instances(InstanceIds=[second])


def test_a_held_instance_boots_only_once_released(
    ec2, tags: dict[str, str], tmp_path: Path
) -> None:
    with BootHarness(ec2, root=tmp_path, tags=tags) as harness:
        harness.hold()
        instance_id = run(ec2, tags)
        for _ in range(5):
            harness.poll()  # rounds that see it running
        (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        assert reservation["Instances"][0]["State"]["Name"] == "running"
        assert harness.instances == {}
        harness.release()
        (booted,) = harness.wait_for(1)
        assert booted.instance_id == instance_id
        assert harness.errors == []
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_the_metadata_service(ec2, tags: dict[str, str], tmp_path: Path) -> None:
    with BootHarness(ec2, root=tmp_path, tags=tags) as harness:
        instance_id = run(ec2, tags)
        (booted,) = harness.wait_for(1)
        url = booted.metadata.url
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.put("/latest/api/token").status_code == 400  # the TTL is required
            token = http.put("/latest/api/token", headers={TOKEN_TTL_HEADER: "60"}).text
            signed = {TOKEN_HEADER: token}
            assert http.get("/latest/meta-data/instance-id").status_code == 401  # IMDSv2 only
            assert http.get("/latest/meta-data/instance-id", headers=signed).text == instance_id
            assert http.get("/latest/meta-data/instance-type", headers=signed).text == "g4dn.xlarge"
            action = "/latest/meta-data/spot/instance-action"
            assert http.get(action, headers=signed).status_code == 404

            harness.interrupt(instance_id)
            notice = http.get(action, headers=signed)
            assert notice.status_code == 200
            assert json.loads(notice.text)["action"] == "terminate"
            assert json.loads(notice.text)["time"].endswith("Z")
        assert booted.metadata.requests[-1] == action
    with pytest.raises(httpx.ConnectError):  # stopped with the harness
        httpx.get(f"{url}/latest/meta-data/instance-id", timeout=5)
    ec2.terminate_instances(InstanceIds=[instance_id])
