"""Absolute and `~` paths of a job in a container: host folders of the job, bound in."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from tests.runner.artifact_helpers import (
    CountingStore,
    assign,
    dependency,
    digest_of,
    files_of,
    running,
    stored_manifest,
)
from tests.runner.conftest import FakeRunnerApi

from dstack.models.job import JobStatus
from dstack.models.logs import LogStream
from dstack.models.repo import RepoRef
from dstack.providers.images import ImageSettings
from dstack.runner.executors.docker import DockerExecutor, docker_client
from dstack.runner.settings import RunnerSettings

pytestmark = pytest.mark.docker

IMAGE = "dstack-test/python:3.11"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def test_image() -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "build-test-images.sh")], check=True)
    return IMAGE


def _docker(settings: RunnerSettings) -> DockerExecutor:
    client = docker_client(required=True)
    return DockerExecutor(client, images=ImageSettings(default_image=IMAGE))


def test_home_and_absolute_paths_in_a_container(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, test_image: str
) -> None:
    store = CountingStore()
    weights = stored_manifest(store, "/input", {"w.txt": b"weights\n"})
    saved = stored_manifest(store, "~/.cache/pip", {"old.whl": b"old\n"})
    job = assign(
        repo_ref,
        "cat /input/w.txt /root/.cache/pip/old.whl",
        "mkdir -p /output/sub ~/.cache/models",
        "echo result > /output/sub/r.txt",
        "echo model > ~/.cache/models/m",
        "echo new > ~/.cache/pip/new.whl",
        artifacts=["/output", "~/.cache/models"],
        cache=["~/.cache/pip"],
    )
    job.deps.append(dependency(weights))
    job.caches.append(saved)
    with running(tmp_path, fake_api, store, executor=_docker):
        fake_api.assignments.put(job)
        final = fake_api.wait_final("job-1", timeout=60)
    assert final.status is JobStatus.DONE, fake_api.text("job-1")
    assert fake_api.text("job-1", LogStream.STDOUT) == "weights\nold\n"
    assert files_of(fake_api.latest("job-1", "/output")) == {"sub/r.txt": digest_of(b"result\n")}
    assert files_of(fake_api.latest("job-1", "~/.cache/models")) == {"m": digest_of(b"model\n")}
    (cache,) = fake_api.caches["job-1"]
    assert files_of(cache) == {"new.whl": digest_of(b"new\n"), "old.whl": digest_of(b"old\n")}
    assert store.content(digest_of(b"result\n")) == b"result\n"


def test_a_stopped_container_keeps_its_relative_artifacts(
    tmp_path: Path, fake_api: FakeRunnerApi, repo_ref: RepoRef, test_image: str
) -> None:
    from dstack.models.protocol import HeartbeatResponse

    store = CountingStore()
    job = assign(repo_ref, "mkdir -p out", "echo partial > out/ckpt", "sleep 300",
                 artifacts=["out"])  # fmt: skip
    with running(tmp_path, fake_api, store, executor=_docker, stop_grace=1):
        fake_api.assignments.put(job)
        fake_api.wait_status("job-1", lambda s: s is JobStatus.RUNNING, timeout=60)
        ckpt = tmp_path / "runner" / "jobs" / "job-1" / "code" / "out" / "ckpt"
        deadline = time.monotonic() + 30
        while not ckpt.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fake_api.answers.put(HeartbeatResponse(stop_jobs=["job-1"]))
        final = fake_api.wait_final("job-1", timeout=60)
    assert final.status is JobStatus.STOPPED
    assert files_of(fake_api.latest("job-1", "out")) == {"ckpt": digest_of(b"partial\n")}
